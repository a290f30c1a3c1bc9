"""Node capacity: the pure parsers of what a node says about itself, and the local profile's declared part."""
import pytest

from orchestra.errors import ProfileError
from runaway.capacity import (local_capacity, parse_cpu_list, parse_meminfo, parse_nvidia_smi_list,
                              parse_proc_nvidia_gpus, render_cpu_list)

SMI = """GPU 0: NVIDIA H200 (UUID: GPU-5c1a8f44-0000-0000-0000-000000000000)
GPU 1: NVIDIA H200 (UUID: GPU-5c1a8f44-0000-0000-0000-000000000001)
  MIG 1g.18gb     Device  0: (UUID: MIG-0000)
GPU 2: NVIDIA H200 (UUID: GPU-5c1a8f44-0000-0000-0000-000000000002)
"""

INFORMATION = """Model: \t\t NVIDIA H200
IRQ:   \t\t 156
GPU UUID: \t GPU-5c1a8f44-0000-0000-0000-000000000000
Video BIOS: \t 96.00.74.00.01
Bus Type: \t PCIe
DMA Size: \t 52 bits
DMA Mask: \t 0xfffffffffffff
Bus Location: \t 0000:18:00.0
Device Minor: \t %d
GPU Excluded:\t No
"""

MEMINFO = """MemTotal:       131811340 kB
MemFree:        12000000 kB
MemAvailable:   100000000 kB
"""


def test_nvidia_smi_list_gives_the_cuda_indices():
    assert parse_nvidia_smi_list(SMI) == ("0", "1", "2")
    assert parse_nvidia_smi_list("No devices were found\n") == ()


def test_proc_driver_information_gives_the_minors_sorted():
    assert parse_proc_nvidia_gpus([INFORMATION % 3, INFORMATION % 1, "garbage"]) == ("1", "3")


def test_meminfo_total_in_bytes():
    assert parse_meminfo(MEMINFO) == 131811340 * 1024
    assert parse_meminfo("nothing") is None


def test_cpu_lists_parse_and_render_back():
    assert parse_cpu_list("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert render_cpu_list((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    assert render_cpu_list([5]) == "5"
    with pytest.raises(ValueError):
        parse_cpu_list("0-x")


def test_local_capacity_takes_what_is_declared_and_detects_the_rest():
    cap = local_capacity("localhost", {"gpus": [0, 1, 2, 3], "memory": "64G"}, cores_available=(0, 1, 2, 3),
                         gpus_detected=())
    assert cap.gpus == ("0", "1", "2", "3") and cap.cores == (0, 1, 2, 3) and cap.memory == 64 * 2**30
    detected = local_capacity("localhost", {"cpus": 2}, cores_available=(4, 5, 6), gpus_detected=("0",),
                              meminfo=MEMINFO)
    assert detected.cores == (4, 5) and detected.gpus == ("0",) and detected.memory == 131811340 * 1024


def test_declaring_more_cores_than_exist_is_refused():
    with pytest.raises(ProfileError, match="cpus: 8, but it gives only 2 cores"):
        local_capacity("localhost", {"cpus": 8}, cores_available=(0, 1), gpus_detected=(), meminfo="")


def test_the_remote_probe_reads_cores_memory_and_gpus():
    from runaway.capacity import parse_probe

    text = ("Cpus_allowed_list:\t0-5\n" + MEMINFO.splitlines()[0] + "\n--- nvidia-smi\n" + SMI + "--- proc\n")
    cap = parse_probe(text, "gpu1", {"cpus": 4})
    assert cap.name == "gpu1" and cap.cores == (0, 1, 2, 3) and cap.gpus == ("0", "1", "2")
    assert cap.memory == 131811340 * 1024
    no_smi = "Cpus_allowed_list:\t0\n--- nvidia-smi\n--- proc\n" + INFORMATION % 0 + INFORMATION % 1
    assert parse_probe(no_smi, "h", {}).gpus == ("0", "1")
    assert parse_probe("Cpus_allowed_list: 0-1\n--- nvidia-smi\n--- proc\n", "h", {"gpus": [7]}).gpus == ("7",)
    with pytest.raises(ProfileError, match="could not read which cores"):
        parse_probe("garbage", "h", {})
