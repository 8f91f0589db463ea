#!/usr/bin/env python3
"""A blocking echo server in Python that meets the netbook stage contract.

It shows that the conformance suite grades a server in any language:

    cargo xtask grade --stage ch01 --cmd 'python3 tests/examples/blocking_echo.py --listen {listen}'

It is ch01's design: one client at a time, so it shows ch01's limitations.
"""

import argparse
import signal
import socket
import sys


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, such as 127.0.0.1:7001")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.inet_pton(family, host)
    except OSError:
        raise argparse.ArgumentTypeError(f"{text!r}: the host must be an IP address") from None
    return family, host, int(port)


def main():
    parser = argparse.ArgumentParser(description="blocking echo server, one client at a time")
    parser.add_argument("--listen", type=parse_listen, default="127.0.0.1:7001")
    args = parser.parse_args()
    family, host, port = args.listen

    # SIGTERM ends the process with status 0, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(1024)
    except OSError as e:
        print(f"blocking_echo.py: error: cannot listen on {host}:{port}: {e.strerror.lower()}", file=sys.stderr)
        sys.exit(1)
    bound = listener.getsockname()
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    print(f"listening on {shown}:{bound[1]}", flush=True)

    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except (ConnectionResetError, BrokenPipeError):
                pass  # that client is gone; serve the next one


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
