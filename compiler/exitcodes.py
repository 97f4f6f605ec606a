"""ftc's exit statuses, defined once: the command line returns them and the runtime reads the script's.

The generated training script repeats the three of its own (INTERRUPTED, OUT_OF_MEMORY, DISK_FULL in
templates/run_support.py) because it runs without ftc installed; tests/compiler/test_exitcodes.py keeps them equal.
"""

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the spec, data, build or run has problems; a gate failed; a run was refused
EXIT_USAGE = 2  # a bad invocation: a missing file or a wrong argument (argparse exits 2 too)
EXIT_OUT_OF_MEMORY = 3  # the training script ran out of device memory
EXIT_DISK_FULL = 4  # the training script found the disk full
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT), as shells report it
