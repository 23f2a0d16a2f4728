"""Multi-threaded echo server over Gannet (blocking API): one thread per client.

    python examples/echo_server.py [host] [port]
"""

import sys
import threading

import gannet


def handle_client(conn, addr):
    print(f"Connection from {addr}")
    with conn:
        while True:
            data = conn.receive(1024)
            if not data:
                break
            conn.send(b"Echo: " + data)
    print(f"Closed {addr}")


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
    server = gannet.Socket()
    server.bind((host, port))
    server.listen(10)
    print(f"Listening on {server.getsockname()[0]}:{server.getsockname()[1]}", flush=True)
    try:
        while True:
            conn, addr = server.accept()
            threading.Thread(target=handle_client, args=(conn, addr), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
