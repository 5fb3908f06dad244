/* LD_PRELOAD shim for the Janus baseline: getifaddrs() with IFF_LOOPBACK cleared.
 *
 * Janus (like aioice) leaves loopback interfaces out of its ICE host candidates and has
 * no option to keep them (ice_enforce_list only filters what survives that check), so in
 * a loopback-only network namespace it would offer no candidate at all. Clearing the
 * flag makes `lo` look like an ordinary interface; nothing else is changed. Compiled at
 * run time by bench/janus.py into a temporary directory.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real_getifaddrs)(struct ifaddrs **) = NULL;
    if (real_getifaddrs == NULL)
        real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int result = real_getifaddrs(ifap);
    if (result == 0)
        for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next)
            ifa->ifa_flags &= ~IFF_LOOPBACK;
    return result;
}
