"""How data-parallel training picks its transport and launcher, checked without a GPU or MPI:
CuPy and the MPI communicator are stand-ins that record what they are asked."""

from __future__ import annotations

import sys
import types

import pytest

import polynn as pn
from polynn.backends import mpi


class Comm:
    """A communicator of ``size`` ranks seen from ``rank``; ``devices`` is what allgather of
    the ranks' device identities returns (their host names and PCI bus ids)."""

    def __init__(self, rank, devices):
        self.rank, self.size, self.devices = rank, len(devices), devices

    def allgather(self, value):
        assert value == self.devices[self.rank]
        return list(self.devices)

    def bcast(self, value, root=0):
        return value if self.rank == root else "uid-from-rank-0"


def fake_cupy(monkeypatch, *, nccl_available=True, cuda_version=13020, bus="0000:19:00.0"):
    """A ``cupy`` whose ``cupy.cuda.nccl`` exists only as a submodule to import, as CuPy's."""
    cupy = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: cuda_version, deviceGetPCIBusId=lambda index: bus
    )
    cupy.cuda = cuda
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = nccl_available
    nccl.get_unique_id = lambda: "uid"
    nccl.NcclCommunicator = lambda size, uid, rank: ("communicator", size, uid, rank)
    for name, module in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.nccl", nccl)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(mpi.socket, "gethostname", lambda: "node1")
    return cupy


GPU = types.SimpleNamespace(name="cupy", device=types.SimpleNamespace(id=0))


def test_nccl_is_found_though_cupy_imports_it_only_on_request(monkeypatch):
    fake_cupy(monkeypatch)
    comm = Comm(0, [("node1", "0000:19:00.0")])
    chosen = mpi.transport(comm, GPU, nccl=None)
    assert isinstance(chosen, mpi.NcclTransport)
    assert chosen.nccl_comm == ("communicator", 1, "uid", 0)
    assert isinstance(mpi.transport(comm, GPU, nccl=True), mpi.NcclTransport)
    assert type(mpi.transport(comm, GPU, nccl=False)) is mpi.HostTransport


@pytest.mark.parametrize(
    "version, package", [(12080, "nvidia-nccl-cu12"), (13020, "nvidia-nccl-cu13")]
)
def test_without_nccl_the_error_names_the_package_of_this_cuda(monkeypatch, version, package):
    fake_cupy(monkeypatch, nccl_available=False, cuda_version=version)
    comm = Comm(0, [("node1", "0000:19:00.0")])
    assert type(mpi.transport(comm, GPU, nccl=None)) is mpi.HostTransport
    with pytest.raises(pn.BackendUnavailableError, match=f"pip install {package}$"):
        mpi.transport(comm, GPU, nccl=True)


def test_two_ranks_on_one_gpu_sum_through_the_host(monkeypatch):
    """NCCL refuses two ranks on one device: every rank learns it before a communicator is
    made, and takes the host transport (or, asked for NCCL, a clear error)."""
    fake_cupy(monkeypatch)
    same = [("node1", "0000:19:00.0"), ("node1", "0000:19:00.0")]
    for rank in (0, 1):
        assert type(mpi.transport(Comm(rank, same), GPU, nccl=None)) is mpi.HostTransport
        with pytest.raises(pn.BackendUnavailableError, match=r"ranks \[0, 1\] use the same GPU"):
            mpi.transport(Comm(rank, same), GPU, nccl=True)
    # The same bus id on two hosts is two devices.
    apart = [("node2", "0000:19:00.0"), ("node1", "0000:19:00.0")]
    assert isinstance(mpi.transport(Comm(1, apart), GPU, nccl=None), mpi.NcclTransport)


def test_shared_devices():
    assert mpi.shared_devices([("a", 0), ("a", 1), ("b", 0)]) == []
    assert mpi.shared_devices([("a", 0), ("a", 1), ("a", 0), ("a", 1), ("a", 2)]) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "library, euid, expected",
    [
        ("Open MPI v4.1.6, package: Debian OpenMPI", 0, True),
        ("Open MPI v5.0.3", 1000, False),
        ("MPICH Version:      4.2.2", 0, False),
        ("Open MPI v4.1.6", None, False),
    ],
)
def test_open_mpi_is_allowed_to_run_as_root(library, euid, expected):
    env = mpi.launch_env(library, euid)
    root = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    assert env == (root if expected else {})


def test_the_mpiexec_beside_this_python_comes_first(monkeypatch, tmp_path):
    """``pip install mpich`` puts its mpiexec beside the interpreter, which may not be on the
    PATH (a virtual environment used without activating it)."""
    mpi4py = types.ModuleType("mpi4py")
    mpi4py.get_config = lambda: {}
    monkeypatch.setitem(sys.modules, "mpi4py", mpi4py)
    launcher = tmp_path / "mpiexec"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(mpi, "_library_version", lambda: "Open MPI v4.1.6")
    monkeypatch.setattr(mpi, "_euid", lambda: 0)
    path, env = mpi.mpiexec()
    assert path == str(launcher)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
