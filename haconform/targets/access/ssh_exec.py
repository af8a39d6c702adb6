"""Run a program over ssh with its argv intact.

    python3 ssh_exec.py SSH-OPTION... -- DESTINATION PROGRAM [ARG...]

ssh joins the words after the destination into one line for the remote
shell, so `sh -c "a b"` would arrive as `sh -c a b`.  This quotes each word
first, which gives the SSH target's exec_argv the same meaning as the lab's
nsenter prefix: whatever follows is one argv, run as given.
Standard library only: it runs as a plain script, not as part of the package.
"""

import os
import shlex
import sys


def main(args: list[str]) -> None:
    split = args.index("--")
    options, destination, command = args[:split], args[split + 1], args[split + 2:]
    os.execvp("ssh", ["ssh", *options, "--", destination, shlex.join(command)])


if __name__ == "__main__":
    main(sys.argv[1:])
