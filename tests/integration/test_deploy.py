"""deploy/: the container image and the Kubernetes base, checked as far as a
machine without a registry or a cluster allows. The Dockerfile is parsed (its
stages, a numeric non-root USER, its HEALTHCHECK run against a real ficus, the
runtime stage's libraries against what the binary links); the kustomization
is rendered with kubectl and read in Python (kubectl's client-side dry run
needs an API server: the objects' field names are checked against the
Kubernetes API's instead), and the gateway configuration in it is checked
with `ficus check`."""

import itertools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ficus_bin, free_port, http_request, repo_root, run_cli, scaled, wait_until
from harness.procs import spawn, stop_process, wait_ports

DOCKERFILE = "deploy/docker/Dockerfile"
KUSTOMIZE_DIR = "deploy/kubernetes"
# What the grace period keeps beyond the preStop sleep and the drain, for the
# last access-log lines and the final span export (deployment.yaml says why).
GRACE_MARGIN_S = 5


# --- the Dockerfile -----------------------------------------------------------


def dockerfile_stages():
    """[{"from": str, "name": str|None, "steps": [(INSTRUCTION, args)]}], one
    per FROM, continuation lines joined and comments dropped."""
    text = (repo_root() / DOCKERFILE).read_text()
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        logical.append(cur + line)
        cur = ""
    assert not cur, "the Dockerfile ends inside a continued line"
    stages = []
    for instr in logical:
        word, _, args = instr.strip().partition(" ")
        word, args = word.upper(), args.strip()
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"FROM {args}"
            stages.append({"from": m.group(1), "name": m.group(2), "steps": []})
        else:
            assert stages, f"{word} before the first FROM"
            stages[-1]["steps"].append((word, args))
    return stages


def steps(stage, word):
    return [args for w, args in stage["steps"] if w == word]


def exec_form(args, what):
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, RUN)."""
    value = yaml.safe_load(args)  # a JSON array is YAML
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), (
        f"{what} is not in exec form: {args}"
    )
    return value


def copies(stage):
    """{destination in the image: (from stage or None, source)}."""
    out = {}
    for args in steps(stage, "COPY"):
        words = shlex.split(args)
        src_stage = None
        while words[0].startswith("--"):
            if words[0].startswith("--from="):
                src_stage = words[0].split("=", 1)[1]
            words.pop(0)
        *srcs, dest = words
        for src in srcs:
            out[dest] = (src_stage, src)
    return out


def runtime_packages(stage):
    """The packages the stage's apt-get install lines name."""
    pkgs = set()
    for args in steps(stage, "RUN"):
        for part in re.split(r"&&|;", args):
            words = part.split()
            if words[:1] == ["apt-get"] and "install" in words:
                pkgs.update(w for w in words[words.index("install") + 1 :] if not w.startswith("-"))
    return pkgs


def test_dockerfile_stages_user_and_entrypoint():
    text = (repo_root() / DOCKERFILE).read_text()
    assert not re.match(r"#\s*syntax\s*=", text), "a syntax line pulls a frontend image"
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build, final = stages[0], stages[-1]
    for st in stages:
        assert re.fullmatch(r"debian:12(-slim)?|debian:bookworm(-slim)?", st["from"]), st["from"]
    assert final["from"].endswith("-slim"), "the runtime stage starts from Debian slim"
    # The build stage installs what install-deps.sh's BUILD list names, compiles
    # and checks the bundled configuration with the binary it built.
    build_runs = " ".join(steps(build, "RUN"))
    assert "scripts/install-deps.sh build" in build_runs
    assert re.search(r"\bmake\b", build_runs)
    assert re.search(r"ficus check -c deploy/docker/ficus\.yaml", build_runs)
    # The runtime stage: no compiler, no -dev package, checks the config again
    # (its libraries must all be there for that).
    pkgs = runtime_packages(final)
    assert pkgs and not [p for p in pkgs if p.endswith("-dev") or p in ("gcc", "make", "clang")]
    final_runs = " ".join(steps(final, "RUN"))
    assert re.search(r"/usr/local/bin/ficus check -c /etc/ficus/ficus\.yaml", final_runs)

    users = steps(final, "USER")
    assert users, "the runtime stage sets USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert m, f"USER {users[-1]} is not numeric (runAsNonRoot cannot check a name)"
    uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    assert uid != 0 and gid != 0
    # The account exists with those ids, so that tools and logs show a name.
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b", final_runs)
    assert re.search(rf"groupadd\b[^&]*--gid {gid}\b", final_runs)

    assert steps(final, "STOPSIGNAL") in ([], ["SIGTERM"]), "ficus drains on SIGTERM"
    entry = exec_form(steps(final, "ENTRYPOINT")[-1], "ENTRYPOINT")
    cmd = exec_form(steps(final, "CMD")[-1], "CMD")
    assert entry == ["/usr/local/bin/ficus"] and cmd[:2] == ["run", "-c"]
    dests = copies(final)
    assert dests.get(entry[0], (None, None))[0] == "build", "the binary comes from the build stage"
    assert dests[cmd[2]] == (None, "deploy/docker/ficus.yaml")

    # EXPOSE names the bundled configuration's listeners.
    conf = yaml.safe_load((repo_root() / "deploy/docker/ficus.yaml").read_text())
    ports = {a.rsplit(":", 1)[1] for a in conf["server"]["listen"]}
    ports.add(conf["admin"]["listen"].rsplit(":", 1)[1])
    exposed = {p.split("/")[0] for args in steps(final, "EXPOSE") for p in args.split()}
    assert exposed == ports


def test_dockerfile_copies_exist_in_the_build_context():
    ignored = [
        line.strip()
        for line in (repo_root() / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in dockerfile_stages():
        for _dest, (src_stage, src) in copies(stage).items():
            if src_stage is not None or src == ".":
                continue
            assert (repo_root() / src).exists(), f"COPY {src}: not in the repository"
            top = src.split("/")[0]
            assert top not in ignored and src not in ignored, f"COPY {src}: .dockerignore drops it"
    # What the build stage must not get from a developer's tree.
    for path in ("build", "ficus", ".git"):
        assert path in ignored, f".dockerignore keeps {path}"


def test_healthcheck_command_passes_against_a_running_ficus_and_fails_once_stopped(
    ficus, tmp_path, monkeypatch
):
    final = dockerfile_stages()[-1]
    checks = steps(final, "HEALTHCHECK")
    assert len(checks) == 1, "one HEALTHCHECK"
    options, sep, command = checks[0].partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {checks[0]}"
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--interval=\d+s", options)
    argv = exec_form(command, "HEALTHCHECK CMD")
    assert argv[:2] == ["/usr/local/bin/ficus", "probe"], "ficus's own probe, not curl"

    # The command line as the image has it, its paths mapped to this tree: the
    # binary under test, the probe file the image copies in.
    dests = copies(final)
    local = []
    for word in argv:
        if word == "/usr/local/bin/ficus":
            local.append(ficus_bin())
        elif word in dests and dests[word][0] is None:
            local.append(str(repo_root() / dests[word][1]))
        else:
            local.append(word)
    probe_file = Path(local[local.index("-f") + 1])
    probe = yaml.safe_load(probe_file.read_text())
    urls = [ep["url"] for env in probe["environments"].values() for ep in env["endpoints"]]
    assert urls, "the probe file checks something"

    # The image's own configuration, on free loopback ports and short drains:
    # the probe file must name its admin port and a path the admin serves.
    conf = yaml.safe_load((repo_root() / "deploy/docker/ficus.yaml").read_text())
    admin_port = conf["admin"]["listen"].rsplit(":", 1)[1]
    for url in urls:
        assert re.fullmatch(rf"http://127\.0\.0\.1:{admin_port}/(healthz|readyz)", url), url
    del conf["server"]["listen"], conf["admin"]["listen"]
    del conf["server"]["drain_delay"], conf["server"]["drain_timeout"]
    monkeypatch.setenv(conf["admin"]["token_env"], "deploy-test-token")
    f = ficus(conf)
    mapped = tmp_path / "healthcheck.yaml"
    mapped.write_text(probe_file.read_text().replace(f":{admin_port}/", f":{f.admin_port}/"))
    local[local.index("-f") + 1] = str(mapped)

    r = subprocess.run(local, capture_output=True, text=True, timeout=scaled(15))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f.stop() == 0
    r = subprocess.run(local, capture_output=True, text=True, timeout=scaled(15))
    assert r.returncode != 0, "the healthcheck passes with ficus stopped:\n" + r.stdout


def package_of(lib):
    """The Debian package that installed the shared library at path lib."""
    p = Path(lib)
    candidates = [str(p), str(p.resolve())]
    for c in list(candidates):  # merged /usr: dpkg may know the other spelling
        if c.startswith("/usr/lib/"):
            candidates.append(c[len("/usr") :])
        elif c.startswith("/lib/"):
            candidates.append("/usr" + c)
    for c in candidates:
        r = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].split(",")[0].strip()
    raise AssertionError(f"no Debian package installed {lib}")


def slim_base_packages():
    """What Debian slim images hold whatever the Dockerfile installs: the
    packages a minbase bootstrap takes (Essential: yes, Priority: required)
    and what they depend on, as this Debian's package database says."""
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    deps, todo = {}, []
    for line in r.stdout.splitlines():
        name, essential, priority, depends = line.split("\t")
        deps[name] = [re.split(r"[\s:(]", d.strip())[0] for d in depends.split(",") if d.strip()]
        if essential == "yes" or priority == "required":
            todo.append(name)
    base = set()
    while todo:
        p = todo.pop()
        if p not in base:
            base.add(p)
            todo.extend(deps.get(p, []))
    return base


def test_runtime_stage_installs_every_library_the_binary_links():
    release = repo_root() / "build/release/ficus"
    binary = release if release.exists() else Path(ficus_bin())
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    libs = re.findall(r"=>\s+(/\S+)", r.stdout)
    assert libs, r.stdout
    wanted = runtime_packages(dockerfile_stages()[-1])
    base = slim_base_packages()
    assert "libc6" in base
    missing = []
    for lib in libs:
        if re.search(r"/lib(a|ub|l|t)san\.", lib):
            continue  # a sanitizer build's runtime; the image builds release
        pkg = package_of(lib)
        if pkg not in wanted and pkg not in base:
            missing.append(f"{lib} ({pkg})")
    assert not missing, "the runtime stage does not install: " + ", ".join(missing)


# --- the Kubernetes base ------------------------------------------------------


@pytest.fixture(scope="module")
def rendered():
    """{kind: object} from `kubectl kustomize deploy/kubernetes` (offline)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: scripts/install-deps.sh installs kubernetes-client"
    r = subprocess.run([kubectl, "kustomize", str(repo_root() / KUSTOMIZE_DIR)],
                       capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/dev/null"})
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    by_kind = {}
    for d in docs:
        assert d["kind"] not in by_kind, f"two {d['kind']} objects"
        by_kind[d["kind"]] = d
    return by_kind


def gateway_config(objs):
    cm = objs["ConfigMap"]
    assert list(cm["data"]) == ["ficus.yaml"], "the ConfigMap holds the configuration file"
    return cm["data"]["ficus.yaml"]


def ficus_container(objs):
    containers = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "ficus")


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    assert m, f"not a duration: {text}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_objects_have_the_expected_api_versions(rendered):
    assert {k: o["apiVersion"] for k, o in rendered.items()} == {
        "ConfigMap": "v1",
        "Deployment": "apps/v1",
        "Service": "v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
    }
    for kind, obj in rendered.items():
        assert obj["metadata"]["name"], kind
        check_fields(obj, kind, kind)


def test_configmap_configuration_passes_ficus_check(rendered, tmp_path, monkeypatch):
    conf = tmp_path / "ficus.yaml"
    conf.write_text(gateway_config(rendered))
    env_name = yaml.safe_load(conf.read_text())["admin"]["token_env"]
    monkeypatch.setenv(env_name, "deploy-test-token")
    r = run_cli(["check", "--strict", "-c", str(conf)])
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(conf.read_text())
    assert not cfg["server"].get("control_socket"), "no takeover in pods"
    assert cfg["server"].get("workers", "auto") != "auto", "auto counts the node's CPUs"


def test_probes_hit_the_admin_port_of_the_configuration(rendered):
    cfg = yaml.safe_load(gateway_config(rendered))
    c = ficus_container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    numbers = set(ports.values())
    admin_host, admin_port = cfg["admin"]["listen"].rsplit(":", 1)
    assert admin_host not in ("127.0.0.1", "localhost", "[::1]"), "the kubelet probes the pod IP"
    listen_ports = {int(a.rsplit(":", 1)[1]) for a in cfg["server"]["listen"]}
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        port = get["port"]
        assert port in ports or port in numbers, f"{probe}: no container port {port}"
        assert ports.get(port, port) == int(admin_port), f"{probe} is not on admin.listen"
        assert get["path"] == path, f"{probe} asks {get['path']}"
    assert ports["http"] in listen_ports
    # The Service carries the traffic port, never the admin one.
    for sp in rendered["Service"]["spec"]["ports"]:
        assert ports.get(sp["targetPort"], sp["targetPort"]) in listen_ports


def test_grace_period_covers_prestop_and_drain(rendered):
    cfg = yaml.safe_load(gateway_config(rendered))
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    command = ficus_container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep" and len(command) == 2, command
    pre_stop = int(command[1])
    drain = duration_s(cfg["server"].get("drain_delay", "5s")) + duration_s(
        cfg["server"].get("drain_timeout", "30s"))
    need = pre_stop + drain + GRACE_MARGIN_S
    assert spec["terminationGracePeriodSeconds"] >= need, (
        f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} < "
        f"preStop {pre_stop} + drain {drain} + margin {GRACE_MARGIN_S}")
    strategy = rendered["Deployment"]["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_labels_and_selectors_match(rendered):
    dep = rendered["Deployment"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]

    def selects(sel, what):
        assert sel and set(sel.items()) <= set(pod_labels.items()), f"{what} {sel} misses the pods"

    selects(dep["spec"]["selector"]["matchLabels"], "Deployment selector")
    selects(rendered["Service"]["spec"]["selector"], "Service selector")
    selects(rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], "PDB selector")
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} == {"topology.kubernetes.io/zone",
                                                  "kubernetes.io/hostname"}
    for t in spread:
        selects(t["labelSelector"]["matchLabels"], f"spread over {t['topologyKey']}")
    ref = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment",
                                                             dep["metadata"]["name"])
    assert "replicas" not in dep["spec"], "the HPA owns the count; apply would reset it"
    metrics = rendered["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
    hpa_min = rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert hpa_min >= 2 and rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa_min


def test_config_is_mounted_as_a_watched_directory(rendered):
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    c = ficus_container(rendered)
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if "configMap" in volumes[m["name"]]]
    assert "subPath" not in mount, "a subPath mount never receives ConfigMap updates"
    assert volumes[mount["name"]]["configMap"]["name"] == rendered["ConfigMap"]["metadata"]["name"]
    args = c["args"]
    assert args[:2] == ["run", "-c"]
    assert args[2] == mount["mountPath"].rstrip("/") + "/" + next(iter(rendered["ConfigMap"]["data"]))


_kubelet_writes = itertools.count(1)


def kubelet_write(mount, files):
    """Writes files into mount as the kubelet updates a ConfigMap volume: a
    new hidden directory, the ..data symlink renamed over to point at it, each
    key a symlink through ..data, the previous directory removed."""
    fresh = mount / f"..2026_01_01_00_00_00.{next(_kubelet_writes)}"
    fresh.mkdir(parents=True)
    for key, text in files.items():
        (fresh / key).write_text(text)
    data = mount / "..data"
    old = data.resolve() if data.is_symlink() else None
    tmp = mount / "..data_tmp"
    tmp.symlink_to(fresh.name)
    os.replace(tmp, data)
    for key in files:
        if not (mount / key).is_symlink():
            (mount / key).symlink_to(f"..data/{key}")
    if old is not None:
        shutil.rmtree(old)


def test_a_configmap_update_reloads_the_running_pod_configuration(rendered, mock, tmp_path,
                                                                   monkeypatch):
    """The Deployment's command line on the ConfigMap as the kubelet mounts
    it; a changed ConfigMap (kubectl apply) reaches ficus without a restart."""
    a, b = mock("a"), mock("b")
    cfg = yaml.safe_load(gateway_config(rendered))
    port, admin = free_port(), free_port()
    cfg["server"].update(listen=[f"127.0.0.1:{port}"], drain_delay="0s", drain_timeout="1s")
    cfg["admin"]["listen"] = f"127.0.0.1:{admin}"
    (group,) = cfg["target_groups"].values()
    group["targets"] = [a.addr]
    monkeypatch.setenv(cfg["admin"]["token_env"], "deploy-test-token")

    c = ficus_container(rendered)
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    local = tmp_path / mount["mountPath"].lstrip("/")
    (key,) = rendered["ConfigMap"]["data"]
    kubelet_write(local, {key: yaml.safe_dump(cfg)})
    args = [arg.replace(mount["mountPath"], str(local)) for arg in c["args"]]
    proc, _out, err = spawn([ficus_bin(), *args])
    try:
        wait_ports([port, admin], proc, 10, "ficus run")

        def answered_by():
            return http_request(port, "GET", "/").header("X-Mock-Name")

        assert answered_by() == "a"
        group["targets"] = [b.addr]
        kubelet_write(local, {key: yaml.safe_dump(cfg)})
        assert wait_until(lambda: answered_by() == "b", scaled(5)), "\n".join(err.lines[-20:])
    finally:
        assert stop_process(proc) == 0


def test_admin_token_comes_from_the_documented_secret(rendered):
    cfg = yaml.safe_load(gateway_config(rendered))
    c = ficus_container(rendered)
    env = {e["name"]: e for e in c["env"]}
    ref = env[cfg["admin"]["token_env"]]["valueFrom"]["secretKeyRef"]
    assert ref.get("optional") is not True, "a missing Secret must stop the pod, not open the admin"
    # The base leaves the Secret out (a token has no place in git); the docs
    # say how to create it, with the name and key the pods read.
    ops = (repo_root() / "docs/operations.md").read_text()
    m = re.search(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", ops)
    assert m, "docs/operations.md does not say how to create the admin Secret"
    assert (m.group(1), m.group(2)) == (ref["name"], ref["key"])


def test_pod_runs_unprivileged_as_the_image_user(rendered):
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    c = ficus_container(rendered)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert spec["securityContext"]["runAsNonRoot"] is True or sc.get("runAsNonRoot") is True
    user = steps(dockerfile_stages()[-1], "USER")[-1]
    assert f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsGroup']}" == user
    version = (repo_root() / "VERSION").read_text().strip()
    assert c["image"] == f"ficus:{version}", "the base runs the version this tree builds"
    res = c["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    cfg = yaml.safe_load(gateway_config(rendered))
    assert str(cfg["server"]["workers"]) == str(res["requests"]["cpu"]), "workers = CPU request"


def test_systemd_units_stop_timeout_covers_the_default_drain():
    # The Kubernetes grace period's counterpart on a host (docs/operations.md, systemd).
    for unit in ("ficus.service", "ficus@.service"):
        text = (repo_root() / "deploy/systemd" / unit).read_text()
        m = re.search(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE)
        assert m and int(m.group(1)) > 5 + 30, f"{unit}: TimeoutStopSec under drain_delay + drain_timeout"


def test_docs_say_how_to_build_and_apply():
    ops = (repo_root() / "docs/operations.md").read_text()
    assert re.search(r"docker build -f deploy/docker/Dockerfile( -t [^\n]+)? \.\n", ops)
    assert "kubectl apply -k deploy/kubernetes" in ops


# --- the Kubernetes API's field names ----------------------------------------
# kubectl validates against the cluster's OpenAPI document, which needs a
# cluster. This is the part of it the base uses: every field of these types
# as the Kubernetes API reference (v1.29) lists them; a misspelt or misplaced
# key, which the API server would drop or refuse, fails here.

S, I, B, IOS, MAP, ANY = "string", "integer", "boolean", "int-or-string", "map", "any"
META = {"name": S, "namespace": S, "labels": MAP, "annotations": MAP, "generateName": S}
SELECTOR = {"matchLabels": MAP, "matchExpressions": [ANY]}
TYPES = {
    "ConfigMap": {"apiVersion": S, "kind": S, "metadata": META, "data": MAP, "binaryData": MAP,
                  "immutable": B},
    "Service": {"apiVersion": S, "kind": S, "metadata": META, "spec": {
        "type": S, "selector": MAP, "clusterIP": S, "sessionAffinity": S,
        "externalTrafficPolicy": S, "internalTrafficPolicy": S, "ipFamilyPolicy": S,
        "publishNotReadyAddresses": B, "ports": [{
            "name": S, "port": I, "targetPort": IOS, "protocol": S, "appProtocol": S,
            "nodePort": I}]}},
    "Deployment": {"apiVersion": S, "kind": S, "metadata": META, "spec": {
        "replicas": I, "revisionHistoryLimit": I, "minReadySeconds": I,
        "progressDeadlineSeconds": I, "paused": B, "selector": SELECTOR,
        "strategy": {"type": S, "rollingUpdate": {"maxUnavailable": IOS, "maxSurge": IOS}},
        "template": {"metadata": META, "spec": "PodSpec"}}},
    "HorizontalPodAutoscaler": {"apiVersion": S, "kind": S, "metadata": META, "spec": {
        "scaleTargetRef": {"apiVersion": S, "kind": S, "name": S},
        "minReplicas": I, "maxReplicas": I,
        "metrics": [{"type": S, "resource": {"name": S, "target": {
            "type": S, "averageUtilization": I, "averageValue": IOS, "value": IOS}}}],
        "behavior": {"scaleUp": "HPAScalingRules", "scaleDown": "HPAScalingRules"}}},
    "HPAScalingRules": {"stabilizationWindowSeconds": I, "selectPolicy": S,
                        "policies": [{"type": S, "value": I, "periodSeconds": I}]},
    "PodDisruptionBudget": {"apiVersion": S, "kind": S, "metadata": META, "spec": {
        "minAvailable": IOS, "maxUnavailable": IOS, "selector": SELECTOR,
        "unhealthyPodEvictionPolicy": S}},
    "PodSpec": {
        "containers": ["Container"], "initContainers": ["Container"], "volumes": ["Volume"],
        "terminationGracePeriodSeconds": I, "automountServiceAccountToken": B,
        "enableServiceLinks": B, "serviceAccountName": S, "priorityClassName": S,
        "nodeSelector": MAP, "affinity": ANY, "tolerations": [ANY], "dnsPolicy": S,
        "restartPolicy": S, "imagePullSecrets": [{"name": S}], "hostNetwork": B,
        "securityContext": {"runAsNonRoot": B, "runAsUser": I, "runAsGroup": I, "fsGroup": I,
                            "fsGroupChangePolicy": S, "supplementalGroups": [I],
                            "seccompProfile": {"type": S, "localhostProfile": S},
                            "sysctls": [{"name": S, "value": S}]},
        "topologySpreadConstraints": [{
            "maxSkew": I, "topologyKey": S, "whenUnsatisfiable": S, "labelSelector": SELECTOR,
            "minDomains": I, "nodeAffinityPolicy": S, "nodeTaintsPolicy": S,
            "matchLabelKeys": [S]}]},
    "Container": {
        "name": S, "image": S, "imagePullPolicy": S, "command": [S], "args": [S],
        "workingDir": S, "ports": [{"name": S, "containerPort": I, "protocol": S,
                                    "hostPort": I, "hostIP": S}],
        "env": [{"name": S, "value": S, "valueFrom": {
            "secretKeyRef": {"name": S, "key": S, "optional": B},
            "configMapKeyRef": {"name": S, "key": S, "optional": B},
            "fieldRef": {"fieldPath": S, "apiVersion": S},
            "resourceFieldRef": {"resource": S, "containerName": S, "divisor": IOS}}}],
        "envFrom": [ANY], "startupProbe": "Probe", "livenessProbe": "Probe",
        "readinessProbe": "Probe",
        "lifecycle": {"preStop": "LifecycleHandler", "postStart": "LifecycleHandler"},
        "resources": {"requests": MAP, "limits": MAP, "claims": [ANY]},
        "securityContext": {"allowPrivilegeEscalation": B, "readOnlyRootFilesystem": B,
                            "runAsNonRoot": B, "runAsUser": I, "runAsGroup": I,
                            "privileged": B, "procMount": S,
                            "capabilities": {"drop": [S], "add": [S]},
                            "seccompProfile": {"type": S, "localhostProfile": S}},
        "volumeMounts": [{"name": S, "mountPath": S, "readOnly": B, "subPath": S,
                          "subPathExpr": S, "mountPropagation": S}],
        "terminationMessagePath": S, "terminationMessagePolicy": S, "stdin": B, "tty": B},
    "Probe": {"httpGet": {"path": S, "port": IOS, "host": S, "scheme": S,
                          "httpHeaders": [{"name": S, "value": S}]},
              "tcpSocket": {"port": IOS, "host": S}, "exec": {"command": [S]},
              "grpc": {"port": I, "service": S},
              "initialDelaySeconds": I, "periodSeconds": I, "timeoutSeconds": I,
              "successThreshold": I, "failureThreshold": I,
              "terminationGracePeriodSeconds": I},
    "LifecycleHandler": {"exec": {"command": [S]}, "httpGet": ANY, "tcpSocket": ANY,
                         "sleep": {"seconds": I}},
    "Volume": {"name": S, "configMap": {"name": S, "items": [{"key": S, "path": S, "mode": I}],
                                        "defaultMode": I, "optional": B},
               "secret": {"secretName": S, "items": [ANY], "defaultMode": I, "optional": B},
               "emptyDir": {"medium": S, "sizeLimit": IOS}},
}


def check_fields(value, schema, path):
    """Fails on a key the schema does not know or a value of the wrong type."""
    if isinstance(schema, str) and schema in TYPES:
        schema = TYPES[schema]
    if schema == ANY:
        return
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{path}: not an object"
        for k, v in value.items():
            assert k in schema, f"{path}.{k}: no such field"
            check_fields(v, schema[k], f"{path}.{k}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{path}: not a list"
        for i, v in enumerate(value):
            check_fields(v, schema[0], f"{path}[{i}]")
    elif schema == MAP:
        assert isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ), f"{path}: not a map of strings"
    elif schema == S:
        assert isinstance(value, str), f"{path}: not a string"
    elif schema == I:
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: not an integer"
    elif schema == B:
        assert isinstance(value, bool), f"{path}: not a boolean"
    elif schema == IOS:
        assert isinstance(value, (int, str)) and not isinstance(value, bool), (
            f"{path}: not an integer or a string")
    else:
        raise AssertionError(f"{path}: unknown schema {schema}")


def test_field_check_catches_a_misspelt_field():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "readinesProbe": {}}]}}}}
    with pytest.raises(AssertionError, match="readinesProbe: no such field"):
        check_fields(bad, "Deployment", "Deployment")
    with pytest.raises(AssertionError, match="not an integer"):
        check_fields({"spec": {"replicas": "3"}}, {"spec": {"replicas": I}}, "x")
