#!/usr/bin/env python3
"""The test control plane with one real node: containerd, runc, CNI, kubelet and kube-scheduler.

Pods run for real here (images imported, never pulled), so tests can check what only a pod
shows: security contexts, probes, in-cluster configuration, the API server calling a webhook
through its Service. See docs/development.md, section "A real node".

API (everything else is private)::

    import node  # with hack/ on sys.path, as tests/node/conftest.py does
    with node.NodeCluster() as cluster:        # control plane + node "n1", Ready; raises NodeError
        cluster.import_image("budgetops:test")  # podman image -> containerd, named as in pod specs
        cluster.kubectl("apply", "-f", "x.yaml")  # and everything else a ControlPlane has:
        cluster.kubeconfig, cluster.server, cluster.ca_file, cluster.token, cluster.binaries
        cluster.address  # 10.245.0.1: the API server, and the host as pods see it

Pods: no image is pulled (``imagePullPolicy: Never`` or ``IfNotPresent``), no cluster DNS, and
no kube-proxy: only the ``kubernetes`` Service's ClusterIP works inside pods; the API server
reaches webhooks and Service proxies at endpoint IPs (``--enable-aggregator-routing``).

``prepare()`` installs the Debian packages (containerd, runc, CNI plugins, iptables) and builds
kubelet, kube-scheduler and the pause binary; ``missing()`` says what is not there yet, without
installing anything. One node cluster runs per machine at a time (a host-wide lock: a second
waits). Everything of the node lives in a network namespace of its own, joined to the host by a
veth pair; pods can reach only each other, that namespace and the API server's port.

CLI: ``prepare`` (install and build what is missing), ``up [--keep] [--image TAG]`` (run until
Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
import control_plane as cp  # a sibling script, not a package

NODE_NAME = "n1"
NETNS = "budgetops-node"
HOST_LINK, NODE_LINK = "bo-node-host", "bo-node-ns"
# Our own test host's addresses: the veth pair, and the pods' bridge inside the namespace.
HOST_ADDRESS, NODE_ADDRESS, LINK_PREFIX = "10.245.0.1", "10.245.0.2", 30
POD_SUBNET, POD_GATEWAY = "10.244.0.0/24", "10.244.0.1"
KUBERNETES_SERVICE_IP = "10.96.0.1"
BRIDGE = "cni0"
PAUSE_IMAGE = "budgetops.local/pause:1"
PACKAGES = {  # Debian package: what shows it is installed
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "iproute2": "/usr/sbin/ip",
    "util-linux": "/usr/bin/nsenter",
}
# Paths kubelet and containerd 1.6 use whatever they are configured with.
HOST_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
)
LOCK = Path("/run/lock/budgetops-node.lock")
STATE = Path("/run/budgetops-node.json")  # what a running (or killed) node cluster made
LOCK_TIMEOUT = 900.0
NODE_DIR_SIZE = "6g"  # tmpfs for containerd and kubelet: a bound, only what is used is held
NODE_TIMEOUT = 60.0


class NodeError(cp.ControlPlaneError):
    """The node could not be prepared or did not come up; the message says why."""


def _run(*command: str, netns: bool = False, timeout: float = 120) -> str:
    """Run a command (in the node's network namespace if ``netns``); its stdout, or NodeError."""
    full = ["nsenter", f"--net=/run/netns/{NETNS}", "--", *command] if netns else list(command)
    done = subprocess.run(full, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise NodeError(f"{' '.join(full)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --- preparing ------------------------------------------------------------------------------


def _missing_packages() -> list[str]:
    return [package for package, path in PACKAGES.items() if not Path(path).exists()]


def missing() -> list[str]:
    """What ``prepare()`` would still install or build, in words; empty when ready."""
    needs = [f"Debian package {package}" for package in _missing_packages()]
    if cp.node_binaries(build=False) is None:
        needs.append("kubelet, kube-scheduler and pause (built from Go modules)")
    if cp.cached_binaries() is None:
        needs.append("the control plane (`python hack/control_plane.py build`)")
    return needs


def prepare(log: cp.Log = cp._stderr) -> dict[str, Path]:
    """Install the missing Debian packages with apt-get, build what is not cached; idempotent."""
    packages = _missing_packages()
    if packages:
        log(f"apt-get install {' '.join(packages)}")
        root = cp.cache_root()
        root.mkdir(parents=True, exist_ok=True)
        apt_log = root / "node-apt.log"
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with apt_log.open("w") as out:
            # The package lists a machine comes with usually do; refresh them only when not.
            if subprocess.run(install, stdout=out, stderr=out, env=env, check=False).returncode:
                subprocess.run(["apt-get", "update", "-q"], stdout=out, stderr=out, check=False)
                if subprocess.run(install, stdout=out, stderr=out, env=env, check=False).returncode:
                    tail = "\n".join(apt_log.read_text().splitlines()[-20:])
                    raise NodeError(f"apt-get install {' '.join(packages)} failed:\n{tail}")
    cp.ensure_binaries(log)
    binaries = cp.node_binaries(build=True, log=log)
    assert binaries is not None
    return binaries


def _not_ready_message(needs: Sequence[str]) -> str:
    return (
        f"the node is not prepared ({'; '.join(needs)}): run `python hack/node.py prepare` "
        "as root (up to about 15 minutes from nothing on 2 cores)"
    )


def _pause_archive(pause: Path) -> bytes:
    """A docker-archive of a one-layer image holding only the static pause binary."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer:
        info = layer.gettarinfo(str(pause), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with pause.open("rb") as binary:
            layer.addfile(info, binary)
    layer_bytes = layer_buffer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
            },
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, config)):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
        entry = tarfile.TarInfo("manifest.json")
        entry.size = len(manifest)
        tar.addfile(entry, io.BytesIO(manifest))
    return archive.getvalue()


def normalized(reference: str) -> str:
    """An image name as kubelet and containerd spell it (``budgetops:test`` ->
    ``docker.io/library/budgetops:test``)."""
    name, _, digest = reference.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{'library/' if not slash else ''}{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


# --- host state -----------------------------------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if Path(point).is_relative_to(root):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def _pod_pids() -> set[int]:
    """Processes in the node's pod cgroups (kubelet puts them under /kubepods)."""
    pids: set[int] = set()
    for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids |= {int(pid) for pid in procs.read_text().split()}
    return pids


def _shim_pids(socket: Path) -> set[int]:
    """containerd-shim processes serving our containerd (they outlive it by design)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"containerd-shim" in argv[0] and str(socket).encode() in argv:
                    pids.add(int(entry.name))
    return pids


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_cgroups() -> None:
    """Every kubepods cgroup kubelet made, in every hierarchy, children first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            for group in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if group.is_dir():
                    with contextlib.suppress(OSError):
                        group.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _clean_pods(state: dict[str, Any], log: cp.Log) -> None:
    """Kill the pods and shims a node cluster left, unmount under its workdir, drop cgroups."""
    workdir = Path(state["workdir"])
    socket = Path(state["containerd_socket"])
    for attempt in range(20):  # pods may be forking while we kill; converge
        pids = _pod_pids() | _shim_pids(socket)
        if not pids:
            break
        _kill(pids)
        time.sleep(0.1 * (attempt + 1))
    for point in _mounts_under(workdir):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    _remove_cgroups()
    left = _mounts_under(workdir)
    if left:
        log(f"still mounted under {workdir}: {left}")


def _clean_network(state: dict[str, Any]) -> None:
    """Delete the namespace (with it its veth pair, the host's route to the pods, its firewall
    and NAT rules) and the host paths the cluster created. Last: the API server's connections
    into the namespace must close before, or its shutdown waits on them."""
    # Deleting either end deletes the pair; the namespace itself goes away asynchronously.
    subprocess.run(["ip", "link", "delete", HOST_LINK], capture_output=True, check=False)
    if Path(f"/run/netns/{NETNS}").exists():
        subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    for created in state.get("created", ()):
        shutil.rmtree(created, ignore_errors=True)


# --- the cluster ----------------------------------------------------------------------------


class NodeCluster(cp.ControlPlane):
    """A ControlPlane whose API server listens on the node link, plus node ``n1`` Ready.

    ``start()`` (or ``with``) takes the host-wide lock, cleans what a killed earlier run left,
    makes the network namespace, starts the control plane, kube-scheduler, containerd and
    kubelet, and returns once the node is Ready. ``stop()`` kills pods and shims by PID, stops
    every process, unmounts, deletes the namespace (veth, routes, rules) and the host paths it
    created, then releases the lock.
    """

    CONTROLLERS = (
        *cp.ControlPlane.CONTROLLERS,
        "clusterrole-aggregation-controller",
        "deployment-controller",
        "replicaset-controller",
        "statefulset-controller",
        "daemonset-controller",
        "job-controller",
        "endpoints-controller",
        "endpointslice-controller",
        "disruption-controller",
        "pod-garbage-collector-controller",
        "ttl-after-finished-controller",
        # Lifts the not-ready taint kubelet registers the node with, once it is Ready.
        "node-lifecycle-controller",
    )

    def __init__(
        self,
        binaries: cp.Binaries | None = None,
        *,
        workdir: Path | None = None,
        keep: bool = False,
        timeout: float = cp.READY_TIMEOUT,
        log: cp.Log = cp._stderr,
    ) -> None:
        needs = missing()
        if needs:
            raise NodeError(_not_ready_message(needs))
        found = cp.node_binaries(build=False)
        assert found is not None
        self.node_binaries = found
        super().__init__(
            binaries, workdir=workdir, keep=keep, timeout=timeout, log=log, address=HOST_ADDRESS
        )
        self.node_dir = self.workdir / "node"
        self.containerd_socket = self.node_dir / "containerd" / "containerd.sock"
        self._lock: IO[str] | None = None
        self._images = cp.cache_root() / "images"

    # --- public ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        try:
            self._take_lock()
            self._network()
            super().start()
            plane_ready = time.monotonic()
            self._start_node()
            self._wait_node_ready(time.monotonic() + NODE_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        done = time.monotonic()
        self._log(
            f"node {NODE_NAME} Ready in {done - started:.1f} s"
            f" (control plane {plane_ready - started:.1f} s, node +{done - plane_ready:.1f} s)"
        )

    def stop(self) -> None:
        for name in ("kubelet", "containerd"):  # kubelet first, or it restarts what we kill
            if name in self._processes:
                cp._terminate(self._processes.pop(name))
        state = self._state()
        if state is not None:
            _clean_pods(state, self._log)
        super().stop()
        if state is not None:
            _clean_network(state)
            STATE.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def import_image(self, tag: str, *names: str) -> list[str]:
        """Copy podman's image ``tag`` into the node; named ``tag`` (and ``names``) for pods.

        Returns the names containerd now has for it. The docker-archive is cached by image id.
        """
        image_id = _podman("image", "inspect", "--format", "{{.Id}}", tag).strip()
        self._images.mkdir(parents=True, exist_ok=True)
        archive = self._images / f"{image_id}.tar"
        if not archive.is_file():
            partial = archive.with_suffix(".part")
            partial.unlink(missing_ok=True)
            _podman("save", "--format", "docker-archive", "-o", str(partial), tag)
            partial.rename(archive)
            for old in sorted(self._images.glob("*.tar"), key=lambda p: p.stat().st_mtime)[:-3]:
                old.unlink()  # images rebuilt since: keep the cache from growing
        output = self._ctr("images", "import", str(archive))
        imported = [line.split()[1] for line in output.splitlines() if line.startswith("unpacking")]
        if not imported:
            raise NodeError(f"ctr images import {archive} named no image:\n{output}")
        wanted = [normalized(name) for name in (tag, *names)]
        for name in wanted:
            if name not in imported:
                self._ctr("images", "tag", "--force", imported[0], name)
        return sorted({*imported, *wanted})

    # --- control plane additions ----------------------------------------------------------

    def _apiserver_args(self, pki: cp.Pki, *, etcd: int, port: int) -> list[str]:
        return [
            *super()._apiserver_args(pki, etcd=etcd, port=port),
            # Webhooks and aggregated APIs at endpoint IPs: no kube-proxy is needed.
            "--enable-aggregator-routing=true",
            # logs, exec, port-forward: kubelet trusts our CA and authorizes system:masters.
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
            "--kubelet-preferred-address-types=InternalIP",  # never a DNS lookup of "n1"
            # 10.245.0.1 is a valid endpoint, so the `kubernetes` Service gets its EndpointSlice.
            "--endpoint-reconciler-type=lease",
        ]

    # --- private --------------------------------------------------------------------------

    def _take_lock(self) -> None:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        handle = LOCK.open("w")
        deadline = time.monotonic() + LOCK_TIMEOUT
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    message = f"another node cluster held {LOCK} for {LOCK_TIMEOUT:.0f} s"
                    raise NodeError(message) from None
                if not told:
                    self._log(f"waiting for another node cluster to stop ({LOCK})")
                    told = True
                time.sleep(1)
        self._lock = handle
        if STATE.exists():  # a run that was killed: its processes are gone, its leftovers not
            leftover = json.loads(STATE.read_text())
            self._log(f"cleaning what a killed node cluster left ({leftover['workdir']})")
            _clean_pods(leftover, self._log)
            _clean_network(leftover)
            shutil.rmtree(leftover["workdir"], ignore_errors=True)
        for taken in (f"{HOST_ADDRESS}/", f"{POD_GATEWAY.rsplit('.', 1)[0]}."):
            routes = _run("ip", "-4", "-o", "address") + _run("ip", "-4", "route")
            if taken in routes:
                raise NodeError(f"this host already uses {taken}*: the node's addresses collide")
        created = [str(path) for path in HOST_PATHS if not path.exists()]
        STATE.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "workdir": str(self.workdir),
                    "containerd_socket": str(self.containerd_socket),
                    "created": created,
                }
            )
        )

    def _state(self) -> dict[str, Any] | None:
        """The state file, if this cluster wrote it (it holds the lock)."""
        if self._lock is None or not STATE.exists():
            return None
        state: dict[str, Any] = json.loads(STATE.read_text())
        return state

    def _network(self) -> None:
        """The namespace and the veth pair to it (any left by a lost run of ours go first)."""
        _clean_network({})
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK)
        _run("ip", "link", "set", NODE_LINK, "netns", NETNS)
        _run("ip", "address", "add", f"{HOST_ADDRESS}/{LINK_PREFIX}", "dev", HOST_LINK)
        _run("ip", "link", "set", HOST_LINK, "up")
        _run("ip", "route", "add", POD_SUBNET, "via", NODE_ADDRESS, "dev", HOST_LINK)
        _run("ip", "link", "set", "lo", "up", netns=True)
        _run("ip", "address", "add", f"{NODE_ADDRESS}/{LINK_PREFIX}", "dev", NODE_LINK, netns=True)
        _run("ip", "link", "set", NODE_LINK, "up", netns=True)
        # Per namespace: the host's own ip_forward is not touched.
        _run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", netns=True)

    def _firewall(self, api_port: int) -> None:
        """The `kubernetes` Service as one DNAT rule; forwarding only pods <-> API server."""
        rules = [
            ["-t", "nat", "-A", "PREROUTING", "-d", KUBERNETES_SERVICE_IP, "-p", "tcp",
             "--dport", "443", "-j", "DNAT", "--to-destination", f"{HOST_ADDRESS}:{api_port}"],
            ["-P", "FORWARD", "DROP"],
            ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
             "-j", "ACCEPT"],
            ["-A", "FORWARD", "-i", BRIDGE, "-o", NODE_LINK, "-d", HOST_ADDRESS, "-p", "tcp",
             "--dport", str(api_port), "-j", "ACCEPT"],
            # The API server (and the test process) to pods: webhooks, service proxy.
            ["-A", "FORWARD", "-i", NODE_LINK, "-o", BRIDGE, "-s", HOST_ADDRESS, "-j", "ACCEPT"],
            ["-A", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"],
        ]  # fmt: skip
        for rule in rules:
            _run("iptables", "-w", "5", *rule, netns=True)

    def _start_node(self) -> None:
        api_port = int(self.server.rsplit(":", 1)[1])
        self._firewall(api_port)
        # Images, containers and pod volumes in memory: unpacking is faster, and stop() frees
        # them with one unmount instead of deleting tens of thousands of files (19 s measured).
        self.node_dir.mkdir()
        _run("mount", "-t", "tmpfs", "-o", f"size={NODE_DIR_SIZE},mode=0700", "tmpfs",
             str(self.node_dir))  # fmt: skip
        self._spawn(
            "kube-scheduler",
            [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0"],
            command=[str(self.node_binaries["kube-scheduler"])],
        )
        in_netns = ["nsenter", f"--net=/run/netns/{NETNS}", "--"]
        containerd_config = self._write_containerd_config()
        self._spawn(
            "containerd", [f"--config={containerd_config}"], command=[*in_netns, "containerd"]
        )
        deadline = time.monotonic() + NODE_TIMEOUT
        while not self.containerd_socket.exists():
            self._check_alive("containerd's socket", deadline)
            time.sleep(0.05)
        pause_tar = self.node_dir / "pause.tar"
        pause_tar.write_bytes(_pause_archive(self.node_binaries["pause"]))
        self._ctr("images", "import", str(pause_tar))
        kubelet_config, kubelet_kubeconfig = self._write_kubelet_files()
        self._spawn(
            "kubelet",
            [
                f"--config={kubelet_config}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={self.node_dir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_ADDRESS}",
                "--v=1",
            ],
            command=[*in_netns, str(self.node_binaries["kubelet"])],
        )

    def _write_containerd_config(self) -> Path:
        base = self.node_dir / "containerd"
        (self.node_dir / "cni").mkdir(parents=True, exist_ok=True)
        (self.node_dir / "cni" / "10-budgetops.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "budgetops-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,  # pods reach nothing outside the namespace
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.node_dir / "cni-ipam"),
                            },
                        }
                    ],
                },
                indent=1,
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = base / "config.toml"
        base.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj makes every sandbox fail.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.node_dir / "cni"}"
  max_conf_num = 1
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{base / "runc"}"
"""
        )
        return config

    def _write_kubelet_files(self) -> tuple[Path, Path]:
        """kubelet's configuration, and its kubeconfig as system:node:n1 (a client cert)."""
        assert self.pki is not None
        directory = self.node_dir / "kubelet-conf"
        directory.mkdir(parents=True, exist_ok=True)
        ca = (
            x509.load_pem_x509_certificate(self.pki.ca_cert.read_bytes()),
            serialization.load_pem_private_key(self.pki.ca_key.read_bytes(), None),
        )
        assert isinstance(ca[1], ec.EllipticCurvePrivateKey)
        cert, key = cp._write_leaf(
            directory=directory,
            stem="kubelet-client",
            subject=cp._name(f"system:node:{NODE_NAME}", "system:nodes"),
            ca=(ca[0], ca[1]),
            extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
        )
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            "clusters:\n- name: budgetops\n  cluster:\n"
            f"    server: {self.server}\n    certificate-authority: {self.pki.ca_cert}\n"
            f"users:\n- name: node\n  user:\n    client-certificate: {cert}\n"
            f"    client-key: {key}\n"
            "contexts:\n- name: node\n  context:\n    cluster: budgetops\n    user: node\n"
            "current-context: node\n"
        )
        resolv = directory / "resolv.conf"
        resolv.write_text("# no cluster DNS here (docs/development.md)\n")
        pod_logs = self.node_dir / "pod-logs"
        pod_logs.mkdir(exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",  # containerd 1.6 cannot report its driver
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "address": NODE_ADDRESS,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "podLogsDir": str(pod_logs),
            "resolvConf": str(resolv),
            "makeIPTablesUtilChains": False,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            # Never evict or collect images for disk space: this disk is shared and not ours.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
        }
        path = directory / "config.json"  # JSON is YAML
        path.write_text(json.dumps(config, indent=1))
        return path, kubeconfig

    def _ctr(self, *args: str) -> str:
        return _run(
            "ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args,
            timeout=300,
        )  # fmt: skip

    def _check_alive(self, what: str, deadline: float) -> None:
        exited = {n: p.returncode for n, p in self._processes.items() if p.poll() is not None}
        if exited:
            raise NodeError(f"waiting for {what}: exited {exited}\n{self._logs()}")
        if time.monotonic() > deadline:
            raise NodeError(f"{what} not ready after {NODE_TIMEOUT:.0f} s\n{self._logs()}")

    def _wait_node_ready(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        request = urllib.request.Request(
            f"{self.server}/api/v1/nodes/{NODE_NAME}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        while True:
            with contextlib.suppress(OSError, ValueError):
                with opener.open(request, timeout=2) as response:
                    node = json.load(response)
                conditions = node.get("status", {}).get("conditions", [])
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                if ready and not node["spec"].get("taints"):  # schedulable too
                    return
            self._check_alive(f"node {NODE_NAME} Ready", deadline)
            time.sleep(0.2)


def _podman(*args: str) -> str:
    return _run("podman", *args, timeout=600)


# --- command line ---------------------------------------------------------------------------


def _cmd_prepare(_: argparse.Namespace) -> int:
    try:
        binaries = prepare()
    except (NodeError, cp.BuildError) as error:
        print(f"prepare failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps({name: str(path) for name, path in binaries.items()}, indent=2))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        prepare()
    except (NodeError, cp.BuildError) as error:
        print(f"prepare failed: {error}", file=sys.stderr)
        return 1
    cluster = NodeCluster(keep=args.keep)

    def import_images() -> None:
        for tag in args.image:
            print(f"imported {tag}: {', '.join(cluster.import_image(tag))}")

    cp.serve(cluster, import_images)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="install the Debian packages, build the node binaries")
    up = commands.add_parser("up", help="run a control plane with a node until Ctrl-C")
    up.add_argument("--keep", action="store_true", help="keep the workdir (logs) after stopping")
    up.add_argument("--image", action="append", default=[], help="podman image to import")
    args = parser.parse_args(argv)
    return {"prepare": _cmd_prepare, "up": _cmd_up}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
