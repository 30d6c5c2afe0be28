"""``python -m tools loadtest`` (tools/loadtest.py): its flags, the in-process side on the sim
device, and the synthetic questions of a set token length."""


def test_synthetic_questions_hit_their_token_lengths(tiny_model_dir):
    from transformers import AutoTokenizer

    from tools.loadtest import synthetic_questions

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    lengths = [5, 6, 17, 64, 200]
    items = synthetic_questions(lengths, tok)
    got = [len(tok(it["question"], it["context"])["input_ids"]) for it in items]
    assert got == lengths


def test_loadtest_accepts_the_backend_flags():
    from tools.cli import build_parser

    args = build_parser().parse_args(
        [
            "loadtest",
            "--model-dir",
            "m",
            "--backend",
            "sim",
            "--sim-profile",
            "slow",
            "--sim-tokens-per-s",
            "5000",
        ]
    )
    assert (args.backend, args.sim_profile, args.sim_tokens_per_s) == ("sim", "slow", 5000.0)


def test_loadtest_inprocess_side_runs_on_the_sim(tiny_model_dir):
    from transformers import AutoTokenizer

    from tools.loadtest import format_result, inprocess_load, synthetic_questions

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    items = synthetic_questions([12, 40, 64, 100], tok)
    knobs = {"mode": "unpack_repack", "algorithm": "first_fit", "batch_wait_timeout_s": 0.01}
    res = inprocess_load(
        str(tiny_model_dir),
        items,
        2,
        knobs,
        threads=1,
        backend="sim",
        backend_options={"profile": "fast"},
    )
    assert res.errors == 0 and res.requests == 4
    assert res.backend == "sim fast (dynamic shapes, 1000000000 token slots/s) unpack_repack"
    assert format_result(res).endswith(f", backend {res.backend}")
