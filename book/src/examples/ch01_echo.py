"""ch01 in Python: a blocking echo server, one client at a time.

Grade it with:
    cargo xtask grade --stage ch01 --cmd 'python3 book/src/examples/ch01_echo.py --port {port}'
"""
import argparse
import errno
import signal
import socket
import sys
import time


def main():
    parser = argparse.ArgumentParser(description="blocking echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001)
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is out of range")

    # SIGTERM's default action kills the process without an exit status of
    # its own; make it a clean exit, as SIGINT already is (KeyboardInterrupt).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.host, args.port))
        listener.listen(1024)
    except OSError as e:
        sys.exit(f"ch01_echo.py: error: cannot listen on {args.host}:{args.port}: {e.strerror}")

    host, port = listener.getsockname()[:2]
    # flush=True: when stdout is a pipe, print() keeps the line in a buffer.
    print(f"listening on {host}:{port}", flush=True)

    try:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)  # it would fail again at once: do not spin
                continue  # ECONNABORTED: that client has gone; take the next
            with conn:
                try:
                    while data := conn.recv(16384):
                        conn.sendall(data)
                except OSError:
                    pass  # ECONNRESET, EPIPE: this client is gone; serve the next
    except (KeyboardInterrupt, SystemExit):
        sys.exit(0)


if __name__ == "__main__":
    main()
