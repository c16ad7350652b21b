# UDPPingerServer.py from the textbook's UDP Pinger assignment: upper-cases
# each message and drops about 4 in 11 at random to simulate loss. Changes for
# tests: port and random seed from argv, the port printed once bound, and the
# running total of drops printed after each drop.
import random
import sys
from socket import *
serverPort = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
if len(sys.argv) > 2:
    random.seed(int(sys.argv[2]))
serverSocket = socket(AF_INET, SOCK_DGRAM)
serverSocket.bind(('', serverPort))
print("The server is ready to receive")
print(serverSocket.getsockname()[1], flush=True)
drops = 0
while True:
    rand = random.randint(0, 10)
    message, address = serverSocket.recvfrom(1024)
    message = message.upper()
    if rand < 4:
        drops += 1
        print("dropped", drops, flush=True)
        continue
    serverSocket.sendto(message, address)
