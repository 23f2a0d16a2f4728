"""`gannet netlab`: bring up, use, inspect, change and tear down an emulated network."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

LINK_OPTIONS = [
    # (flag, LinkConfig key, help)
    ("--delay", "delay", "one-way delay, e.g. 20ms"),
    ("--jitter", "jitter", "delay varies by +/- this, e.g. 5ms (order kept)"),
    ("--loss", "loss", "random loss, e.g. 1%%"),
    ("--rate", "rate", "rate limit, e.g. 50mbit, 1gbit, 100kbit (0 = none)"),
    ("--queue", "queue", "drop-tail queue of the rate limit: packets (100) or bytes (64kb)"),
    ("--reorder", "reorder", "probability a packet is held back (reordered), e.g. 1%%"),
    ("--reorder-gap", "reorder_gap", "how long a reordered packet is held back (default 10ms)"),
    ("--duplicate", "duplicate", "duplication probability, e.g. 0.5%%"),
    ("--corrupt", "corrupt", "probability of flipping a bit, e.g. 0.1%%"),
    ("--mtu", "mtu", "drop packets larger than this many bytes"),
]


def _add_link_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("link properties (both directions unless --dir / --a-to-b / --b-to-a)")
    for flag, _key, help_ in LINK_OPTIONS:
        g.add_argument(flag, dest="opt_" + flag[2:].replace("-", "_"), metavar="V", help=help_)
    g.add_argument("--burst-loss", dest="opt_burst_loss", metavar="P,R[,BAD[,GOOD]]",
                   help="Gilbert-Elliott loss: P(good->bad), P(bad->good), loss in bad "
                        "(default 100%%) and good (default 0) states, e.g. 1%%,30%%")
    g.add_argument("--down", dest="opt_down", choices=["on", "off"],
                   help="on: drop everything (an outage); off: restore")


def _changes(args: argparse.Namespace) -> dict:
    ch: dict = {}
    for flag, key, _ in LINK_OPTIONS:
        v = getattr(args, "opt_" + flag[2:].replace("-", "_"))
        if v is not None:
            ch[key] = v
    if args.opt_burst_loss:
        parts = [x.strip() for x in args.opt_burst_loss.split(",")]
        if not 1 <= len(parts) <= 4:
            raise ValueError("--burst-loss takes P,R[,BAD[,GOOD]]")
        for key, v in zip(("burst_p", "burst_r", "burst_loss_bad", "burst_loss_good"), parts):
            ch[key] = v
    if args.opt_down is not None:
        ch["down"] = args.opt_down == "on"
    return ch


def _kv(text: str) -> dict:
    """'delay=20ms,loss=1%' -> {'delay': '20ms', 'loss': '1%'}"""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _schedule_entry(text: str) -> tuple[float, str, dict]:
    """'5s:both:down=1' -> (5.0, 'both', {'down': '1'})"""
    from gannet.netlab.units import parse_time
    try:
        t, d, kv = text.split(":", 2)
    except ValueError:
        raise ValueError(f"bad --at {text!r} (use T:DIR:KEY=V,...)") from None
    return parse_time(t), d, _kv(kv)


def _error(msg: str):
    from gannet.cli.main import CLIError
    return CLIError(msg)


def _resolve(args) -> str:
    from gannet.netlab.state import list_labs
    if args.name:
        return args.name
    labs = list_labs()
    if "default" in labs:
        return "default"
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise _error("no netlab is up (gannet netlab up)")
    raise _error(f"several netlabs are up ({', '.join(labs)}): pick one with --name")


def _attach(args):
    from gannet.netlab import Netlab, NetlabError
    try:
        return Netlab.attach(_resolve(args))
    except NetlabError as exc:
        raise _error(str(exc)) from None


def cmd_up(args) -> int:
    from gannet.netlab import LinkConfig, Netlab, NetlabError
    try:
        base = LinkConfig().replace(**_changes(args))
        a_to_b = base.replace(**_kv(args.a_to_b)) if args.a_to_b else base
        b_to_a = base.replace(**_kv(args.b_to_a)) if args.b_to_a else base
        schedule = [_schedule_entry(x) for x in args.at or []]
    except ValueError as exc:
        raise _error(str(exc)) from None
    lab = Netlab(a_to_b=a_to_b, b_to_a=b_to_a, seed=args.seed, name=args.name or "default",
                 mtu=args.dev_mtu, schedule=schedule, daemon=True)
    try:
        lab.start()
    except NetlabError as exc:
        raise _error(str(exc)) from None
    lab.detach()
    print(f"netlab {lab.name} up: a={lab.addr('a')} ({lab.ns('a')})  "
          f"b={lab.addr('b')} ({lab.ns('b')})  forwarder pid {lab.forwarder_pid}")
    print(f"  run: gannet netlab exec a -- ping {lab.addr('b')}")
    return 0


def cmd_exec(args) -> int:
    lab = _attach(args)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise _error("nothing to run: gannet netlab exec a -- CMD ...")
    try:
        rc = subprocess.call(lab.command(args.node, cmd))
    except KeyboardInterrupt:
        return 130
    return 128 - rc if rc < 0 else rc


def _fmt_link(d: str, cfg: dict, s: dict) -> list[str]:
    from gannet.netlab.units import format_rate, format_time
    props = [f"delay {format_time(cfg['delay'])}"]
    if cfg["jitter"]:
        props.append(f"jitter {format_time(cfg['jitter'])}")
    if cfg["loss"]:
        props.append(f"loss {cfg['loss']:.3%}")
    if cfg["burst_p"]:
        props.append(f"burst-loss p={cfg['burst_p']:g} r={cfg['burst_r']:g}")
    props.append(f"rate {format_rate(cfg['rate'])}")
    if cfg["rate"]:
        q = (f"{cfg['queue_packets']}p" if cfg["queue_packets"] else "") + \
            (f" {cfg['queue_bytes']}B" if cfg["queue_bytes"] else "")
        props.append(f"queue {q.strip() or 'unlimited'}")
    for k in ("reorder", "duplicate", "corrupt"):
        if cfg[k]:
            props.append(f"{k} {cfg[k]:.3%}")
    if cfg["mtu"]:
        props.append(f"mtu {cfg['mtu']}")
    if cfg["down"]:
        props.append("DOWN")
    drops = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none"
    lat = s["latency"]
    return [
        f"{d}: " + ", ".join(props),
        f"    in {s['rx_packets']} pkts / {s['rx_bytes']} B, out {s['tx_packets']} pkts / "
        f"{s['tx_bytes']} B; dropped {s['dropped_total']} ({drops}); kernel-dropped "
        f"{s['kernel_dropped']}",
        f"    corrupted {s['corrupted']}, duplicated {s['duplicated']}, reordered "
        f"{s['reordered']}; queue now {s['queue']['packets']} pkts (max "
        f"{s['queue']['max_packets']}), queue delay mean "
        f"{s['queue_delay']['mean'] * 1e3:.2f} ms max {s['queue_delay']['max'] * 1e3:.2f} ms; "
        f"latency mean {lat['mean'] * 1e3:.2f} ms max {lat['max'] * 1e3:.2f} ms",
    ]


def cmd_status(args) -> int:
    try:
        return _status(args)
    except BrokenPipeError:  # `gannet netlab status | head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _status(args) -> int:
    from gannet.netlab import NetlabError
    lab = _attach(args)
    try:
        st = lab.stats()
        links = lab._request({"op": "get"})["links"]
    except NetlabError as exc:
        print(f"netlab {lab.name}: forwarder not running ({exc}); "
              f"`gannet netlab down --name {lab.name}` cleans up", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"name": lab.name, "addrs": lab.addrs, "namespaces": lab.namespaces,
                          "links": links, "stats": st, "saturated": lab.saturated(st)}, indent=1))
        return 0
    fw = st["forwarder"]
    print(f"netlab {lab.name}: a={lab.addr('a')} ({lab.ns('a')}), b={lab.addr('b')} "
          f"({lab.ns('b')}); forwarder pid {fw['pid']}, up {st['uptime']:.1f}s, "
          f"CPU {fw['cpu_load']:.1%} (peak {fw['peak_load']:.0%})")
    for d in ("a->b", "b->a"):
        print("\n".join(_fmt_link(d, links[d], st["links"][d])))
    sat = lab.saturated(st)
    print("saturated: " + ("; ".join(sat) if sat else "no"))
    return 0


def cmd_set(args) -> int:
    from gannet.netlab import NetlabError
    lab = _attach(args)
    try:
        changes = _changes(args)
        for item in args.props:
            changes.update(_kv(item))
        if not changes:
            raise ValueError("nothing to change (e.g. --delay 50ms or loss=1%)")
        links = lab.set_link(args.dir, **changes)
        if args.at:
            lab.schedule([_schedule_entry(x) for x in args.at])
    except (ValueError, NetlabError) as exc:
        raise _error(str(exc)) from None
    for d, cfg in links.items():
        print(f"{d}: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
    return 0


def cmd_down(args) -> int:
    from gannet.netlab.state import list_labs, state_dir, teardown
    names = list_labs() if args.all else [_resolve(args)]
    if not args.all and not state_dir(names[0]).exists():
        raise _error(f"no netlab named {names[0]!r}")
    for name in names:
        actions = teardown(state_dir(name))
        print(f"netlab {name} down" + (f": {', '.join(actions)}" if actions else ""))
    return 0


def cmd_list(args) -> int:
    from gannet.netlab.state import list_labs, read_state, state_dir, pid_alive
    for name in list_labs():
        st = read_state(state_dir(name)) or {}
        pid = st.get("forwarder_pid")
        alive = "running" if pid and pid_alive(pid) else "forwarder dead"
        print(f"{name}\t{' '.join(st.get('namespaces', []))}\t{alive}")
    return 0


def cmd_capacity(args) -> int:
    from gannet.netlab import measure_capacity
    r = measure_capacity(seconds=args.seconds, size=args.size)
    print(f"forwarder capacity: {r['pps']:.0f} packets/s, {r['mbit']:.0f} Mbit/s with "
          f"{r['size']}-byte packets (offered {r['offered_pps']:.0f} packets/s, forwarder CPU "
          f"{r['forwarder_cpu']:.0%})")
    return 0


def register(subparsers) -> None:
    from gannet.cli.main import summary

    p = subparsers.add_parser("netlab", help=summary("netlab"),
                              description="Two network namespaces joined by a user-space "
                                          "emulated link (delay, loss, rate, ...).")
    sub = p.add_subparsers(dest="netlab_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])

    up = sub.add_parser("up", help="create the namespaces and start the forwarder")
    up.add_argument("--name", help="lab name (default 'default')")
    up.add_argument("--seed", type=int, default=0, help="seed of all random decisions")
    up.add_argument("--dev-mtu", type=int, default=1500, help="MTU of the TUN devices")
    up.add_argument("--a-to-b", metavar="K=V,...", help="overrides for a->b, e.g. delay=30ms")
    up.add_argument("--b-to-a", metavar="K=V,...", help="overrides for b->a")
    up.add_argument("--at", action="append", metavar="T:DIR:K=V,...",
                    help="scheduled change, e.g. 5s:both:down=1 (repeatable)")
    _add_link_options(up)
    up.set_defaults(func=cmd_up)

    ex = sub.add_parser("exec", help="run a command in namespace a or b")
    ex.add_argument("--name")
    ex.add_argument("node", choices=["a", "b"])
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ex.set_defaults(func=cmd_exec)

    stt = sub.add_parser("status", help="print the link settings and live statistics")
    stt.add_argument("--name")
    stt.add_argument("--json", action="store_true")
    stt.set_defaults(func=cmd_status)

    st = sub.add_parser("set", help="change link properties live")
    st.add_argument("--name")
    st.add_argument("--dir", default="both", help="a->b, b->a or both (default)")
    st.add_argument("--at", action="append", metavar="T:DIR:K=V,...",
                    help="also schedule a change T from now (repeatable)")
    st.add_argument("props", nargs="*", metavar="K=V", help="e.g. loss=1%% delay=50ms")
    _add_link_options(st)
    st.set_defaults(func=cmd_set)

    dn = sub.add_parser("down", help="stop the forwarder, delete the namespaces")
    dn.add_argument("--name")
    dn.add_argument("--all", action="store_true", help="every lab recorded in /run/gannet-netlab")
    dn.set_defaults(func=cmd_down)

    ls = sub.add_parser("list", help="list labs")
    ls.set_defaults(func=cmd_list)

    cap = sub.add_parser("capacity", help="measure the forwarder's capacity on a fresh lab")
    cap.add_argument("--seconds", type=float, default=3.0)
    cap.add_argument("--size", type=int, default=1400)
    cap.set_defaults(func=cmd_capacity)
