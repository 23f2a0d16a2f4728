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
