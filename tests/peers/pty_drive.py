"""Runs a command on a pseudo-terminal, as a person at a keyboard would.

usage: pty_drive.py LINE... -- COMMAND...

Waits for each prompt ("Input lowercase sentence:"), types each LINE and
Enter, then types Ctrl-D. Prints everything the terminal showed, then
"exit status N". With PTY_DRIVE_WAIT_FOR=PATH in the environment, types
nothing before that file exists (a person who starts the server in another
terminal before typing).
"""
import os
import pty
import select
import sys
import time

sep = sys.argv.index('--')
lines, command = sys.argv[1:sep], sys.argv[sep + 1:]
PROMPT = b'Input lowercase sentence:'

pid, fd = pty.fork()
if pid == 0:
    os.execvp(command[0], command)

screen = b''
def read_until(needle, count, deadline):
    global screen
    while screen.count(needle) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f'timed out waiting for {needle!r}; screen so far: {screen!r}')
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b''
            if not data:
                raise SystemExit(f'terminal closed; screen so far: {screen!r}')
            screen += data

deadline = time.monotonic() + 20
wait_for = os.environ.get('PTY_DRIVE_WAIT_FOR')
while wait_for and not os.path.exists(wait_for):
    if time.monotonic() > deadline:
        raise SystemExit(f'timed out waiting for {wait_for}')
    time.sleep(0.02)
for i, line in enumerate(lines, start=1):
    read_until(PROMPT, i, deadline)
    os.write(fd, line.encode() + b'\r')
read_until(PROMPT, len(lines) + 1, deadline)
os.write(fd, b'\x04')
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    screen += data
_, status = os.waitpid(pid, 0)
sys.stdout.write(screen.decode(errors='replace'))
print(f'\nexit status {os.waitstatus_to_exitcode(status)}')
