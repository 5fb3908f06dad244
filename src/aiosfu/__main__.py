from aiosfu.cli import main

main()
