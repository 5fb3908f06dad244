/* Callgrind client requests, callable from Python through ctypes.
 *
 * They let bench/callgrind.py count exactly the instructions of a window of packets:
 * setup runs uninstrumented (fast), and each window is zeroed before and dumped after
 * under its own label. Outside valgrind every request is a no-op.
 */
#include <valgrind/callgrind.h>

void marks_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }

void marks_stop_instrumentation(void) { CALLGRIND_STOP_INSTRUMENTATION; }

void marks_zero(void) { CALLGRIND_ZERO_STATS; }

void marks_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }

unsigned marks_running_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
