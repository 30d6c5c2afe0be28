"""Host facts (packing/runtime/host.py): CPU model and features from /proc/cpuinfo's text."""

from packing.runtime.host import (
    CPU_FEATURES,
    cpu_features,
    cpu_model,
    features_line,
    host_description,
    host_facts,
)


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


def test_host_facts_one_set_for_every_tool():
    facts = host_facts(threads=2, numpy="2.0")
    host = host_description()
    assert list(facts)[:7] == [
        "date",
        "cpu",
        "flags",
        "cores",
        "usable_cores",
        "python",
        "platform",
    ]
    assert (facts["cpu"], facts["flags"], facts["cores"]) == (
        host["cpu"],
        host["cpu_features"],
        host["cores"],
    )
    assert facts["date"].endswith("+00:00")
    assert list(facts)[7:] == ["threads", "numpy"] and facts["threads"] == 2
