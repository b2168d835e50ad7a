"""Sets that cannot surprise (contract sections 2 and 4): '#' comments after
whitespace, a relative `file` resolved against the configuration's
directory, `ficus check` reading every set file, refreshes that change
members logged, and ficus_set_members / ficus_set_last_success_timestamp_seconds."""

import os
import re
import subprocess
import time

from harness import (config, ficus_bin, http_request, metric_value, parse_metrics, route,
                     run_cli, scaled, to_yaml, wait_until)


def who(f, path):
    r = http_request(f.port, "GET", path)
    assert r.status == 200, repr(r)
    return r.header("X-Mock-Name")


def sets_config(new, old, set_file, refresh="100ms"):
    return config({"new": new.addr, "old": old.addr},
                  [route("migrated", {"path_regex": "/shops/(?<shop>[0-9a-z#]+)",
                                      "in_set": {"capture": "shop", "set": "migrated"}}, "new"),
                   route("shops", "/shops", "old")],
                  sets={"migrated": {"file": str(set_file), "refresh": refresh}})


def test_comments_after_whitespace(ficus, mock, tmp_path):
    new, old = mock("new"), mock("old")
    set_file = tmp_path / "shops.txt"
    set_file.write_text("# header\n1 # moved in May\n2\t# tab before\n3#4\n  # indented comment\n")
    f = ficus(sets_config(new, old, set_file))
    assert who(f, "/shops/1") == "new"
    assert who(f, "/shops/2") == "new"
    assert who(f, "/shops/3") == "old"  # "3#4" is one member
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_set_members", set="migrated") == 3
    t = metric_value(s, "ficus_set_last_success_timestamp_seconds", set="migrated")
    assert t and abs(t - time.time()) < 60


def test_relative_file_is_relative_to_the_config(tmp_path):
    cfg_dir = tmp_path / "etc"
    cfg_dir.mkdir()
    (cfg_dir / "shops.txt").write_text("1\n")
    text = to_yaml(config({"a": "127.0.0.1:9"},
                          [route("r", {"path_regex": "/s/(?<shop>[0-9]+)",
                                       "in_set": {"capture": "shop", "set": "m"}}, "a")],
                          sets={"m": {"file": "shops.txt"}},
                          admin={"listen": "127.0.0.1:1"}))
    path = cfg_dir / "gw.yaml"
    path.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([ficus_bin(), "check", "-c", str(path)], cwd=elsewhere,
                       capture_output=True, text=True, timeout=scaled(10))
    assert r.returncode == 0, r.stderr
    assert "1 route," in r.stdout and "1 target group)" in r.stdout, r.stdout


def test_check_reports_a_missing_set_file_with_its_location(tmp_path):
    text = ("server: {listen: ['127.0.0.1:1']}\n"
            "target_groups:\n  a: {targets: ['127.0.0.1:9']}\n"
            "sets:\n  m: {file: nowhere.txt}\n"
            "routes:\n  - name: r\n    match: {path_prefix: /}\n"
            "    backends: [{target_group: a, weight: 1}]\n")
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    r = run_cli(["check", "-c", str(path)])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(rf"^{re.escape(str(path))}:5:\d+: sets\.m: .*nowhere\.txt", r.stderr,
                     re.M), r.stderr


def test_a_refresh_that_changes_members_is_logged(ficus, mock, tmp_path):
    new, old = mock("new"), mock("old")
    set_file = tmp_path / "shops.txt"
    set_file.write_text("1\n2\n")
    f = ficus(sets_config(new, old, set_file))
    tmp = tmp_path / "shops.tmp"
    tmp.write_text("2\n3\n4\n")
    os.replace(tmp, set_file)
    assert wait_until(lambda: "set migrated: 3 members (2 added, 1 removed)" in f.stderr,
                      scaled(5)), f.stderr
    assert wait_until(lambda: metric_value(parse_metrics(f.metrics_text()), "ficus_set_members",
                                           set="migrated") == 3, scaled(5))
    # A refresh without a change says nothing more.
    n = f.stderr.count("set migrated:")
    time.sleep(0.5)
    assert f.stderr.count("set migrated:") == n
