"""Host facts (packing/runtime/host.py): CPU model and features from /proc/cpuinfo's text."""

from packing.runtime.host import CPU_FEATURES, cpu_features, cpu_model, features_line


def test_cpu_features_from_cpuinfo_text():
    text = "processor : 0\nmodel name : X\nflags : fpu avx2 avx512f sse\n\nflags : avx512_vnni\n"
    got = cpu_features(cpuinfo=text)
    assert got == {"avx2": True, "avx512f": True, "avx512_vnni": False, "amx_int8": False}
    assert tuple(got) == CPU_FEATURES
    assert cpu_features(("asimd",), cpuinfo="Features : fp asimd\n") == {"asimd": True}
    assert set(cpu_features(cpuinfo="").values()) == {None}
    assert features_line(got) == "avx2=yes avx512f=yes avx512_vnni=no amx_int8=no"
    assert features_line({"avx2": None}) == "avx2=?"


def test_cpu_model_from_cpuinfo_text():
    assert cpu_model("processor : 0\nmodel name : AMD EPYC\n") == "AMD EPYC"
    assert cpu_model("") != ""  # platform's answer when /proc/cpuinfo says nothing
