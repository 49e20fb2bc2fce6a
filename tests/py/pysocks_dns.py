"""DNS queries over SOCKS5 UDP ASSOCIATE with PySocks (a SOCKS5 client warren did not write).

usage: pysocks_dns.py PROXY_PORT DNS_PORT COUNT [USER PASS]
Sends COUNT A queries (ids 1..COUNT, host<id>.example.test) one at a time to 127.0.0.1:DNS_PORT
through the SOCKS5 proxy at 127.0.0.1:PROXY_PORT, each retried up to 3 times on a 5 s wait,
and prints one JSON line: the ids answered in arrival order, the addresses, sends, retries.
With USER and PASS it authenticates with them (RFC 1929).
"""
import json
import socket
import struct
import sys

import socks

proxy_port, dns_port, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
user, password = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, username=user, password=password)
s.settimeout(5)


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


ids, addrs, sent, retries = [], [], 0, 0
for qid in range(1, count + 1):
    for attempt in range(3):
        s.sendto(query(qid, "host%d.example.test" % qid), ("127.0.0.1", dns_port))
        sent += 1
        try:
            data, src = s.recvfrom(4096)
        except socket.timeout:
            retries += 1
            continue
        ids.append(struct.unpack(">H", data[:2])[0])
        addrs.append(".".join(str(b) for b in data[-4:]))
        break
s.close()
print(json.dumps({"ids": ids, "addrs": addrs, "sent": sent, "retries": retries, "src": list(src)}))
