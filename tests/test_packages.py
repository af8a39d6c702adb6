"""Installing the lab's Debian packages: two installs at once (CI's unit and safety jobs) do it once."""

from __future__ import annotations

import threading

from haconform import packages


def test_two_installs_at_once_install_once_and_each_waits_for_the_other(tmp_path, monkeypatch):
    installed: list[str] = []
    inside, second_asked = threading.Event(), threading.Event()
    asked = []

    def missing(_packages=None):
        asked.append(threading.current_thread().name)
        if len(asked) == 3:   # the second caller's first look, while the first one installs
            second_asked.set()
        return [] if installed else ["haproxy"]

    def install(names):
        inside.set()
        assert second_asked.wait(5), "the second install never asked"
        installed.extend(names)
        return names

    monkeypatch.setattr(packages, "INSTALL_LOCK", str(tmp_path / "lock" / "install.lock"))
    monkeypatch.setattr(packages, "missing_packages", missing)
    monkeypatch.setattr(packages, "_install", install)
    monkeypatch.setattr(packages.shutil, "which", lambda name: f"/usr/bin/{name}")
    results: list[list[str]] = []
    first = threading.Thread(target=lambda: results.append(packages.ensure_installed()))
    first.start()
    assert inside.wait(5), "the first install never began"
    second = packages.ensure_installed()   # asks while the first one holds the lock
    first.join(5)
    assert installed == ["haproxy"], installed
    assert sorted(map(tuple, results + [second])) == [(), ("haproxy",)]
    assert len(asked) == 4, "each looked once before the lock and once holding it"
