# The textbook's UDPServer on a slow path: each reply leaves DELAY seconds
# after its request, as over a link paced to about 1/DELAY datagrams a
# second. slow_udp_server.py PORT HOST DELAY; prints the port once bound.
import sys
import time
from socket import *

serverSocket = socket(AF_INET, SOCK_DGRAM)
serverSocket.bind((sys.argv[2], int(sys.argv[1])))
delay = float(sys.argv[3])
print("The server is ready to receive")
print(serverSocket.getsockname()[1], flush=True)
while True:
    message, clientAddress = serverSocket.recvfrom(2048)
    time.sleep(delay)
    serverSocket.sendto(message.decode(errors="replace").upper().encode(), clientAddress)
