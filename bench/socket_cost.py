"""CPU per 64-byte round trip over the blocking `gannet.Socket`, client and
echo server in one process (the echo on a thread of its own): both sides'
adapter + core cost, the way bench/aio_cost.py measures the asyncio API.

    python bench/socket_cost.py 10000
    python bench/socket_cost.py 10000 --insecure

Instructions rather than CPU time (valgrind; steady on a loaded machine):
the difference between a run of N round trips and a run of none, over N.

    valgrind --tool=cachegrind --cache-sim=no python bench/socket_cost.py 2000 --insecure
    valgrind --tool=cachegrind --cache-sim=no python bench/socket_cost.py 0 --insecure
"""
import argparse
import threading
import time

import gannet

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("count", type=int, nargs="?", default=10000, help="round trips (after 200 to settle)")
p.add_argument("--insecure", action="store_true", help="no encryption (the plaintext row)")
args = p.parse_args()

config = gannet.Config(insecure=args.insecure)
listener = gannet.Socket(config=config)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = gannet.Socket(config=config)
client.connect(listener.getsockname())
server, _ = listener.accept()


def echo() -> None:
    while data := server.recv(65536):
        server.sendall(data)


thread = threading.Thread(target=echo, daemon=True)
thread.start()
msg = b"x" * 64


def rounds(k: int) -> None:
    for _ in range(k):
        client.sendall(msg)
        got = client.recv(64)
        while len(got) < 64:
            got += client.recv(64 - len(got))


rounds(200)
t = time.process_time()
rounds(args.count)
cpu = time.process_time() - t
if args.count:
    print(f"{cpu / args.count * 1e6:.1f} us CPU per round trip (both sides and the I/O thread, one process)")
client.close()
thread.join(10)
server.close()
listener.close()
