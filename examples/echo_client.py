"""Echo client over Gannet (blocking API).

    python examples/echo_client.py [host] [port] [message ...]
"""

import sys

import gannet


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
    messages = sys.argv[3:] or ["Hello, Gannet!"]
    with gannet.Socket() as sock:
        sock.settimeout(10)
        sock.connect((host, port))
        for message in messages:
            data = message.encode()
            sock.sendall(data)
            expected = len(b"Echo: ") + len(data)
            reply = b""
            while len(reply) < expected:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                reply += chunk
            print(reply.decode())


if __name__ == "__main__":
    main()
