"""Identity key files, pinned keys (known_hosts), PSK files and codes."""

from __future__ import annotations

import os
import stat

import pytest

from gannet.crypto.code import generate_code, normalize_code, wordlist
from gannet.crypto.identity import (
    KeyFormatError,
    config_dir,
    decode_key,
    decode_peer_key,
    encode_key,
    fingerprint,
    load_identity,
    public_key,
)
from gannet.crypto.known_hosts import KeyChangedError, KnownHosts, host_name
from gannet.crypto.psk import generate_psk_file, load_psk


def test_config_dir_follows_xdg():
    assert str(config_dir({"XDG_CONFIG_HOME": "/x/conf", "HOME": "/h"})) == "/x/conf/gannet"
    assert str(config_dir({"HOME": "/h"})) == "/h/.config/gannet"
    assert str(config_dir({"XDG_CONFIG_HOME": "relative", "HOME": "/h"})) == "/h/.config/gannet"


def test_identity_made_once_private_and_stable(tmp_path):
    d = tmp_path / "gannet"
    key = load_identity(d)
    path = d / "identity"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert public_key(load_identity(d)) == public_key(key)
    with pytest.raises(FileNotFoundError):
        load_identity(tmp_path / "none", create=False)


def test_identity_readable_by_others_or_garbled_is_refused(tmp_path):
    load_identity(tmp_path)
    os.chmod(tmp_path / "identity", 0o644)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        load_identity(tmp_path)
    os.chmod(tmp_path / "identity", 0o600)
    (tmp_path / "identity").write_text("not a key\n")
    with pytest.raises(KeyFormatError, match="identity"):
        load_identity(tmp_path)


def test_key_text_forms():
    key = bytes(range(32))
    assert decode_key(encode_key(key)) == key
    assert fingerprint(key).startswith("SHA256:") and "=" not in fingerprint(key)
    assert fingerprint(key) != fingerprint(bytes(32))
    for bad in ("", "abc", encode_key(bytes(31)), "!!!!"):
        with pytest.raises(KeyFormatError):
            decode_key(bad)


def test_known_hosts_trust_on_first_use(tmp_path):
    kh = KnownHosts(tmp_path / "known_hosts")
    a, b = os.urandom(32), os.urandom(32)
    assert kh.check("example:7000", a) is False  # new: pinned now
    assert kh.check("example:7000", a) is True
    with pytest.raises(KeyChangedError) as info:
        kh.check("example:7000", b)
    msg = str(info.value)
    assert fingerprint(a) in msg and fingerprint(b) in msg and "gannet trust remove example:7000" in msg
    assert kh.lookup("example:7000") == a  # the pin is not replaced by a failed check
    assert stat.S_IMODE((tmp_path / "known_hosts").stat().st_mode) == 0o600


def test_known_hosts_add_remove_replace(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    a, b = os.urandom(32), os.urandom(32)
    kh.add("h1:1", a)
    kh.add("h2:2", b)
    kh.add("h1:1", a)  # same key again: nothing changes
    assert [(p.name, p.key) for p in kh.entries()] == [("h1:1", a), ("h2:2", b)]
    with pytest.raises(KeyChangedError):
        kh.add("h1:1", b)
    kh.add("h1:1", b, replace=True)
    assert kh.lookup("h1:1") == b
    assert kh.remove("h2:2") and not kh.remove("h2:2")
    assert [p.name for p in kh.entries()] == ["h1:1"]
    with pytest.raises(ValueError):
        kh.add("two words", a)


def test_known_hosts_bad_line_names_it(tmp_path):
    path = tmp_path / "kh"
    path.write_text("# comment\n\nhost:1 " + encode_key(bytes(32)) + "\nbroken\n")
    with pytest.raises(KeyFormatError, match=r"kh:4"):
        KnownHosts(path).entries()


def test_host_name():
    assert host_name("127.0.0.1", 7000) == "127.0.0.1:7000"
    assert host_name("::1", 7000) == "[::1]:7000"
    assert host_name("Files.Example", 7000) == "files.example:7000"  # DNS names have no case


def test_peer_key_is_the_key_or_its_fingerprint():
    import hashlib

    from gannet.config import Config

    key = os.urandom(32)
    assert decode_peer_key(encode_key(key)).key == key
    assert decode_peer_key(encode_key(key)).sha256 is None
    for text in (fingerprint(key), " " + fingerprint(key) + "\n", "sha256:" + fingerprint(key)[7:]):
        pin = decode_peer_key(text)
        assert pin.key is None and pin.sha256 == hashlib.sha256(key).digest()
    for bad, phrase in (("SHA256:" + fingerprint(key)[8:], "not a fingerprint"),
                        ("SHA256:" + "A" * 44, "not a fingerprint"),
                        ("SHA256:!!!", "not a fingerprint"),
                        (fingerprint(key)[7:], "not a key or a fingerprint"),  # no SHA256: prefix
                        (encode_key(key)[:-4], "not a key or a fingerprint"),
                        ("", "not a key or a fingerprint")):
        with pytest.raises(KeyFormatError, match=phrase):
            decode_peer_key(bad)
    assert Config(peer_key=fingerprint(key)).peer_key == fingerprint(key)
    with pytest.raises(ValueError, match="peer_key: not a key or a fingerprint"):
        Config(peer_key="xyz")


def test_security_from_a_fingerprint_pins_it_and_skips_trust_on_first_use():
    import hashlib

    from gannet.config import Config
    from gannet.io.security import security_for

    key = os.urandom(32)
    sec = security_for(Config(peer_key=fingerprint(key)))
    assert sec.server_key is None and sec.server_key_sha256 == hashlib.sha256(key).digest()
    assert sec.verify_server is None
    sec = security_for(Config(peer_key=encode_key(key)))
    assert sec.server_key == key and sec.verify_server is None
    assert security_for(Config()).verify_server is not None


def test_known_hosts_pins_the_name_typed_and_the_address(tmp_path):
    """As ssh records `name,address`: a server that moves keeps its pin
    under its name; a different server at a pinned address is refused even
    under a name never used; the same server under a new name gains it."""
    path = tmp_path / "known_hosts"
    kh = KnownHosts(path)
    a, b = os.urandom(32), os.urandom(32)
    assert kh.check("files.example:7000", a, "10.0.0.1:7000") is False  # first use: pinned
    assert kh.lookup("files.example:7000") == kh.lookup("10.0.0.1:7000") == a
    assert path.read_text() == f"files.example:7000,10.0.0.1:7000 {encode_key(a)}\n"
    # The server moved (same name, same key, another address): still known.
    assert kh.check("FILES.example:7000", a, "10.0.0.2:7000") is True
    assert kh.entries()[0].names == ("files.example:7000", "10.0.0.1:7000", "10.0.0.2:7000")
    # Under its name, another key is refused wherever the name now leads.
    with pytest.raises(KeyChangedError, match="the key of files.example:7000 changed"):
        kh.check("files.example:7000", b, "10.0.0.3:7000")
    # A different server at a pinned address, under a name never seen: refused.
    with pytest.raises(KeyChangedError) as info:
        kh.check("other.example:7000", b, "10.0.0.2:7000")
    msg = str(info.value)
    assert "other.example:7000 is at 10.0.0.2:7000, which is pinned to another key" in msg
    assert fingerprint(a) in msg and fingerprint(b) in msg and "gannet trust remove 10.0.0.2:7000" in msg
    assert kh.lookup("other.example:7000") is None  # a refusal pins nothing
    # The same server under another name that leads to a pinned address.
    assert kh.check("alias.example:7000", a, "10.0.0.1:7000") is True
    assert kh.lookup("alias.example:7000") == a and len(kh.entries()) == 1
    # An address typed as the name.
    assert kh.check("10.0.0.9:7000", b) is False and kh.check("10.0.0.9:7000", b) is True
    assert [p.names for p in kh.entries()][1] == ("10.0.0.9:7000",)
    # A named server that now lives at an address another pin had: the address is its own.
    assert kh.check("files.example:7000", a, "10.0.0.9:7000") is True
    assert [p.names for p in kh.entries()] == [
        ("files.example:7000", "10.0.0.1:7000", "10.0.0.2:7000", "alias.example:7000", "10.0.0.9:7000")]
    # Removing by any of its names forgets the whole pin.
    removed = kh.remove("10.0.0.2:7000")
    assert removed is not None and removed.key == a and kh.entries() == []


def test_known_hosts_written_by_address_only_migrate_on_use(tmp_path):
    """A file from before names were recorded (one address a line) is read
    as it is; a name used with a pinned address is added to its line, and a
    different key at such an address is refused."""
    path = tmp_path / "known_hosts"
    a, b = os.urandom(32), os.urandom(32)
    path.write_text(f"10.0.0.1:7000 {encode_key(a)}\n[::1]:7001 {encode_key(b)}\n")
    kh = KnownHosts(path)
    assert kh.check("files.example:7000", a, "10.0.0.1:7000") is True
    assert path.read_text().splitlines()[0] == f"10.0.0.1:7000,files.example:7000 {encode_key(a)}"
    with pytest.raises(KeyChangedError, match=r"is at \[::1\]:7001, which is pinned to another key"):
        kh.check("localhost:7001", a, "[::1]:7001")
    assert kh.check("localhost:7001", b, "[::1]:7001") is True
    assert kh.lookup("localhost:7001") == b


def test_trust_on_first_use_of_the_io_layer_keeps_name_and_address(tmp_path, monkeypatch):
    from gannet.crypto.handshake import HandshakeError
    from gannet.io.security import _trust_on_first_use

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    a, b = os.urandom(32), os.urandom(32)
    _trust_on_first_use(("10.0.0.1", 7000), a, "Files.Example")
    _trust_on_first_use(("10.0.0.2", 7000), a, "files.example")  # moved: known by name
    _trust_on_first_use(("fe80::1", 7000), a, None)  # no name given: by address (a new pin)
    pins = KnownHosts().entries()
    assert [p.names for p in pins] == [("files.example:7000", "10.0.0.1:7000", "10.0.0.2:7000"),
                                       ("[fe80::1]:7000",)]
    with pytest.raises(HandshakeError, match="is at 10.0.0.1:7000, which is pinned to another key"):
        _trust_on_first_use(("10.0.0.1", 7000), b, "reused.example")
    (tmp_path / "gannet" / "known_hosts").write_text("garbled\n")
    with pytest.raises(HandshakeError, match="cannot check the server's key against known_hosts"):
        _trust_on_first_use(("10.0.0.1", 7000), a, "files.example")


def test_psk_file(tmp_path):
    path = tmp_path / "tunnel.psk"
    psk = generate_psk_file(path)
    assert len(psk) == 32 and load_psk(path) == psk
    with pytest.raises(FileExistsError):
        generate_psk_file(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFormatError, match="readable by others"):
        load_psk(path)
    bad = tmp_path / "bad"
    bad.write_text("short\n")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFormatError, match="not a PSK file"):
        load_psk(bad)


def test_codes():
    words = set(wordlist())
    assert len(words) == 2048
    codes = {generate_code() for _ in range(50)}
    assert len(codes) == 50
    for code in codes:
        number, *rest = code.split("-")
        assert 1 <= int(number) < 100 and len(rest) == 2 and set(rest) <= words
        assert normalize_code(code) == code
    assert normalize_code("  7 Guitar  October ") == "7-guitar-october"
    for bad in ("", "guitar-october", "7", "7-gu1tar", "0-a-b"):
        with pytest.raises(ValueError):
            normalize_code(bad)


def test_known_hosts_first_uses_at_once_keep_every_pin(tmp_path):
    """Fifty threads pinning at once (fifty clients of one program meeting
    fifty servers, or one server): every pin is kept, none fails."""
    import threading

    path = tmp_path / "known_hosts"
    keys = {f"127.0.0.1:{5000 + i}": os.urandom(32) for i in range(50)}
    shared = os.urandom(32)
    errors = []

    def pin(name, key):
        try:
            KnownHosts(path).check(name, key)
            KnownHosts(path).check("127.0.0.1:4999", shared)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=pin, args=item) for item in keys.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    kept = {p.name: p.key for p in KnownHosts(path).entries()}
    assert kept == {**keys, "127.0.0.1:4999": shared}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_known_hosts_check_of_a_known_key_reads_the_file_once_until_it_changes(tmp_path, monkeypatch):
    """A client checks the same server's key once per connection: a key
    already pinned under the name and the address is confirmed from the
    file's last parse, without the lock, until the file changes (a pin
    replaced by another process, an edit in place)."""
    path = tmp_path / "known_hosts"
    kh = KnownHosts(path)
    a, b = os.urandom(32), os.urandom(32)
    assert kh.check("server:7000", a, "10.0.0.1:7000") is False
    parses, locked = [], []
    parse, changing = KnownHosts._parse, KnownHosts._changing
    monkeypatch.setattr(KnownHosts, "_parse", lambda self, text: parses.append(1) or parse(self, text))
    monkeypatch.setattr(KnownHosts, "_changing", lambda self: locked.append(1) or changing(self))
    for _ in range(5):
        assert KnownHosts(path).check("server:7000", a, "10.0.0.1:7000") is True
    assert (len(parses), len(locked)) == (1, 0)
    # A new address for the name: the locked path records it.
    assert kh.check("server:7000", a, "10.0.0.2:7000") is True
    assert len(locked) == 1 and kh.entries()[0].names == ("server:7000", "10.0.0.1:7000", "10.0.0.2:7000")
    # Another process replaces the pin (a new file): the old key is refused.
    KnownHosts(path).add("server:7000", b, replace=True)
    with pytest.raises(KeyChangedError):
        kh.check("server:7000", a, "10.0.0.1:7000")
    assert kh.check("server:7000", b, "10.0.0.1:7000") is True
    # An edit in place (same inode and size, a later mtime): read again.
    stamp = path.stat().st_mtime_ns
    path.write_text(path.read_text().replace(encode_key(b), encode_key(a)))
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    with pytest.raises(KeyChangedError):
        kh.check("server:7000", b, "10.0.0.1:7000")
    # The address on a second line: the locked path takes it off that line.
    path.write_text(f"server:7000,10.0.0.1:7000 {encode_key(a)}\nother:1,10.0.0.1:7000 {encode_key(b)}\n")
    os.utime(path, ns=(stamp + 2 * 10**9, stamp + 2 * 10**9))
    locked.clear()
    assert kh.check("server:7000", a, "10.0.0.1:7000") is True
    assert len(locked) == 1 and [p.names for p in kh.entries()] == [("server:7000", "10.0.0.1:7000"), ("other:1",)]
