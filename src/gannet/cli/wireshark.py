"""`gannet wireshark`: where the Gannet dissector is and where to put it."""

from __future__ import annotations

import argparse
import os
import shutil
from importlib import resources

from gannet.cli.main import CLIError, summary

LUA_NAME = "gannet.lua"


def dissector_path() -> str:
    return str(resources.files("gannet.observe").joinpath(LUA_NAME))


def plugin_dir() -> str:
    """Wireshark's personal Lua plugin folder (Help > About > Folders)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "wireshark", "plugins")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "wireshark",
        help=summary("wireshark"),
        description="Gannet ships a Wireshark dissector (Lua; display filter `gannet`). Without "
        "options this prints its path and how to use it; --install copies it into your "
        "personal Wireshark plugin folder.",
    )
    p.add_argument("--install", action="store_true", help=f"copy it to {plugin_dir()}")
    p.add_argument("--path", action="store_true", help="print only the dissector's path")
    p.set_defaults(func=run, serves_stats=False)


def run(args: argparse.Namespace) -> int:
    src = dissector_path()
    if args.path:
        print(src)
        return 0
    if args.install:
        dest_dir = plugin_dir()
        try:
            os.makedirs(dest_dir, exist_ok=True)
            dest = shutil.copyfile(src, os.path.join(dest_dir, LUA_NAME))
        except OSError as exc:
            raise CLIError(f"cannot install into {dest_dir}: {exc.strerror or exc}") from None
        print(f"installed {dest}; restart Wireshark, then filter with: gannet")
        return 0
    print(f"dissector: {src}\n"
          f"install:   copy it into {plugin_dir()}/ (or run: gannet wireshark --install)\n"
          f"one-off:   wireshark -X lua_script:{src} capture.pcap\n"
          f"           tshark -X lua_script:{src} -r capture.pcap -Y gannet\n"
          f"capture:   gannet --pcap capture.pcap COMMAND ... (or tcpdump -w on the UDP port)")
    return 0
