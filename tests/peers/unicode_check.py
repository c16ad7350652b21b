"""Checks a server's case mapping against python3's for every code point.

usage: unicode_check.py HOST PORT upper|lower

Sends every code point python3's Unicode database assigns (all but unassigned
code points and surrogates), one per line, over one TCP connection, half-closes,
reads the whole reply, and compares line by line with str.upper() / str.lower()
applied to each code point alone. Prints the number checked; exits 1 listing
the first mismatches.

A mismatch is allowed only where python3 leaves the character unchanged and
the server's result contains a code point python3's database does not assign: a newer Unicode version added a
case partner that python3 does not know yet (Unicode 16 gave U+019B, U+0264,
U+A7D3 and U+A7D5 new capitals). Those are listed, not failed.
"""
import socket
import sys
import threading
import unicodedata

host, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chars = [chr(cp) for cp in range(0x110000)
         if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != 'Cn'
         and chr(cp) != '\n']
mapping = str.upper if case == 'upper' else str.lower
expected = [mapping(c).encode() for c in chars]
request = '\n'.join(chars).encode() + b'\n'

sock = socket.create_connection((host, port))
def send():
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
sender = threading.Thread(target=send)
sender.start()
parts = []
while True:
    data = sock.recv(1 << 16)
    if not data:
        break
    parts.append(data)
sender.join()
got = b''.join(parts).split(b'\n')
assert got[-1] == b'', 'reply does not end with a newline'
got = got[:-1]
if len(got) != len(chars):
    print(f'expected {len(chars)} lines, got {len(got)}')
    sys.exit(1)
def known(text):
    return all(unicodedata.category(ch) != 'Cn' for ch in text)
bad, newer = [], []
for c, e, g in zip(chars, expected, got):
    if e == g:
        continue
    try:
        g_text = g.decode()
    except UnicodeDecodeError:
        g_text = None
    if e == c.encode() and g_text is not None and not known(g_text):
        newer.append(c)
    else:
        bad.append((c, e, g))
if newer:
    print('mapped to code points newer than python3 knows:',
          ' '.join(f'U+{ord(c):04X}' for c in newer))
for c, e, g in bad[:20]:
    print(f'U+{ord(c):04X} {unicodedata.name(c, "?")}: python {e!r}, server {g!r}')
if bad:
    print(f'{len(bad)} of {len(chars)} code points differ')
    sys.exit(1)
print(f'{len(chars) - len(newer)} code points match python3 {unicodedata.unidata_version}')
