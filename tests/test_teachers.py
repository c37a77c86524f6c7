"""Teachers of Causal Reasoning Distillation: kinematic (faithfulness against independent numpy
measurements), HF (tiny offline model), OpenAI-compatible (local stub server), cache resume."""

from __future__ import annotations

import json
import re
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from posrft.body.formats import custom_format, get_format
from posrft.body.standin import standin_rest_joints
from posrft.skeleton.motion import PART_NAMES, resolve_parts, turning_points
from posrft.skeleton.teachers import (
    KinematicTeacher,
    TeacherError,
    TeacherRequest,
    TeacherResponseError,
    TeacherTimeoutError,
    distill_rationales,
    ends_with_label,
    load_cache,
    make_teacher,
)

T = 60
SMPL = {n: i for i, n in enumerate(get_format("smpl24").joint_names)}
BUILTINS = ["coco17", "h36m17", "ntu25", "smpl22", "smpl24"]


# ------------------------------------------------------------------------- clip builders


def rest_clip() -> np.ndarray:
    """The stand-in T-pose repeated: (T, 24, 3), y up, facing +z, left = +x, pelvis at 0."""
    return np.repeat(standin_rest_joints()[None].astype(np.float64), T, axis=0)


def bump(a: int, b: int) -> np.ndarray:
    """0 outside frames [a, b], a sin^2 bump peaking at 1 in the middle: (T,)."""
    out = np.zeros(T)
    out[a : b + 1] = np.sin(np.linspace(0, np.pi, b - a + 1)) ** 2
    return out


def wave_clip() -> np.ndarray:
    x = rest_clip()
    s = 0.15 * np.sin(2 * np.pi * 3 * np.arange(T) / (T - 1))
    x[:, [SMPL["right_wrist"], SMPL["right_hand"]], 0] += s[:, None]
    return x


def kick_clip() -> np.ndarray:
    x = rest_clip()
    b = bump(20, 40)
    leg = [SMPL["left_ankle"], SMPL["left_foot"]]
    x[:, leg, 2] += 0.40 * b[:, None]
    x[:, leg, 1] += 0.30 * b[:, None]
    return x


def squat_clip() -> np.ndarray:
    """Everything above the knees goes 40 cm down and back up in the last third."""
    x = rest_clip()
    planted = [SMPL[n] for n in ("left_knee", "right_knee", "left_ankle", "right_ankle",
                                 "left_foot", "right_foot")]
    upper = [j for j in range(24) if j not in planted]
    x[:, upper, 1] -= 0.40 * bump(40, 59)[:, None]
    return x


def turn_clip(total_deg: float) -> np.ndarray:
    th = np.radians(total_deg) * np.linspace(0, 1, T) ** 2 * (3 - 2 * np.linspace(0, 1, T))
    c, s = np.cos(th), np.sin(th)
    rot = np.zeros((T, 3, 3))
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = c, s, 1, -s, c
    return np.einsum("tij,tkj->tki", rot, rest_clip())  # rotation about +y through the pelvis


def explain(joints, fmt="smpl24", label="x") -> str:
    [text] = KinematicTeacher().rationales([TeacherRequest(joints, fmt, label)])
    return text


def sentence_of(text: str, subject: str) -> str:
    sentences = re.split(r"(?<=\.) ", text.splitlines()[0])
    hits = [s for s in sentences if s.startswith(f"The {subject} ")]
    assert len(hits) == 1, (subject, text)
    return hits[0]


def cm_in(sentence: str) -> int:
    return int(re.search(r"(\d+) cm", sentence).group(1))


# ------------------------------------------------------------------------- kinematic teacher


def test_wave_names_hand_direction_count_range_and_window():
    x = wave_clip()
    text = explain(x, label="wave right hand")
    assert text.endswith("\nLabel: wave right hand") and ends_with_label(text, "wave right hand")
    s = sentence_of(text, "right hand")
    assert "left and right 3 times" in s and "throughout the clip" in s
    # independent: lateral (x) range of the wrist relative to the pelvis, body facing +z
    rel = x[:, SMPL["right_wrist"], 0] - x[:, SMPL["pelvis"], 0]
    assert abs(cm_in(s) - np.ptp(rel) * 100) <= 0.5 + 1e-9
    assert "left hand, right foot, left foot, head and torso stay nearly still" in text
    assert text.count(".") in range(2, 6)


def test_kick_is_forward_and_up_once_in_the_middle():
    x = kick_clip()
    s = sentence_of(explain(x), "left foot")
    assert "forward and up" in s and "once in the middle and comes back" in s
    rel = x[:, SMPL["left_ankle"]] - x[:, SMPL["pelvis"]]
    q = np.stack([rel[:, 0], x[:, SMPL["left_ankle"], 1], rel[:, 2]], 1)
    peak = np.linalg.norm(q - q[0], axis=1).max()
    assert abs(cm_in(s) - peak * 100) <= 0.5 + 1e-9 and round(peak * 100) == 50


def test_squat_lowers_pelvis_feet_stay():
    x = squat_clip()
    text = explain(x, label="squat")
    s = sentence_of(text, "pelvis")
    assert "down by" in s and "once at the end and comes back" in s
    y = x[:, SMPL["pelvis"], 1]
    assert cm_in(s) == round((y[0] - y.min()) * 100) == 40
    assert not re.search(r"The (left|right) foot moves", text)  # planted feet do not move


@pytest.mark.parametrize("deg,side", [(180.0, "left"), (-90.0, "right")])
def test_turn_degrees_and_side_and_limbs_still(deg, side):
    x = turn_clip(deg)
    text = explain(x)
    s = sentence_of(text, "whole body")
    # independent: heading of the hip line (left - right) in the ground plane, unwrapped
    lat = x[:, SMPL["left_hip"]] - x[:, SMPL["right_hip"]]
    ang = np.degrees(np.unwrap(np.arctan2(-lat[:, 2], lat[:, 0])))
    got = int(re.search(r"turns (\d+) degrees to its (\w+)", s).group(1))
    assert abs(got - abs(ang[-1] - ang[0])) <= 0.5 + 1e-6
    assert f"to its {side}" in s
    # the limbs do not move in the body's own frame
    assert "right hand, left hand, right foot, left foot, head and torso stay nearly still" in text


def test_still_clip_says_nothing_moves_and_is_deterministic():
    x = rest_clip() + np.random.default_rng(0).normal(0, 0.003, (T, 24, 3))
    text = explain(x, label="stand")
    assert text.startswith("No body part moves") and text.endswith("Label: stand")
    assert explain(x, label="stand") == KinematicTeacher().rationales(
        [TeacherRequest(x.astype(np.float32), "smpl24", "stand")])[0]


def test_larger_motion_comes_first_and_hands_meeting_is_counted():
    both = wave_clip() + (kick_clip() - rest_clip())
    text = explain(both)
    assert text.index("The right hand") < text.index("The left foot")  # 180 cm path vs 100 cm
    # clap: hands in front, x = +-(3 cm + 27 cm * (1 + cos)/2), meeting 3 times
    x = rest_clip()
    g = 0.03 + 0.27 * (1 + np.cos(2 * np.pi * 3 * np.arange(T) / (T - 1))) / 2
    for side, sign in (("left", 1), ("right", -1)):
        for j in (SMPL[f"{side}_wrist"], SMPL[f"{side}_hand"]):
            x[:, j] = [0.0, 0.3, 0.4]
            x[:, j, 0] = sign * g
    text = explain(x, label="clap")
    s = [t for t in text.split(". ") if t.startswith("The two hands")][0]
    d = np.linalg.norm(x[:, SMPL["left_wrist"]] - x[:, SMPL["right_wrist"]], axis=1)
    assert "3 times" in s and cm_in(s) == round(d.min() * 100)


def test_raise_and_wave_reports_the_swing_and_a_nod_is_seen():
    x = rest_clip()
    u = np.arange(T) / (T - 1)
    up = np.clip(np.minimum(u, 1 - u) / 0.2, 0, 1)  # up over the first 20%, down over the last
    hand = [SMPL["right_wrist"], SMPL["right_hand"]]
    x[:, hand, 1] += 0.6 * up[:, None]
    x[:, hand, 0] += (0.08 * up * np.sin(2 * np.pi * 3 * u))[:, None]
    s = sentence_of(explain(x), "right hand")
    rel = x[:, SMPL["right_wrist"]] - x[:, SMPL["pelvis"]]
    peak = np.linalg.norm(rel - rel[0], axis=1).max()
    assert f"moves up by {round(peak * 100)} cm once" in s
    m = re.search(r"swinging left and right 3 times by about (\d+) cm", s)
    assert m and abs(int(m.group(1)) - 16) <= 2, s  # 2 x 8 cm, a little less after smoothing
    nod = rest_clip()
    nod[:, SMPL["head"], 1] -= 0.04 * np.sin(np.pi * 2 * u) ** 2  # two 4 cm nods
    assert "The head moves down and up 2 times over a 4 cm range" in explain(nod)


def test_same_motion_same_parts_on_smpl24_and_ntu25():
    for clip in (wave_clip(), kick_clip(), squat_clip() + (wave_clip() - rest_clip())):
        ntu = get_format("ntu25").from_smpl(torch.tensor(clip)).numpy()
        a, b = explain(clip), explain(ntu, "ntu25")

        def parts(t):
            return [m.group(1) for m in re.finditer(r"The (right hand|left hand|right foot|"
                                                    r"left foot|head|torso|pelvis) moves", t)]

        assert parts(a) == parts(b) and parts(a)
        assert re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_format_has_every_part(name):
    assert set(resolve_parts(name).parts) == set(PART_NAMES)


def test_custom_formats_degrade_or_fail_clearly():
    fmt = custom_format([(0, 1), (0, 2)], joint_names=["L-Hip", "R-Hip", "r_wrist"], name="c3")
    x = np.zeros((T, 3, 3))
    x[:, 0, 0], x[:, 1, 0] = 0.1, -0.1
    x[:, 2] = [-0.5, 0.3, 0.0]
    x[:, 2, 1] += 0.3 * bump(0, 25)
    [text] = KinematicTeacher().rationales([TeacherRequest(x, fmt, "raise")])
    assert "The right hand moves up by 30 cm once at the beginning" in text
    nameless = custom_format([(0, 1), (1, 2)])
    with pytest.raises(ValueError, match=r"request 0: .*no joint for the pelvis/root"):
        KinematicTeacher().rationales([TeacherRequest(np.zeros((T, 3, 3)), nameless, "x")])


def test_bad_requests_name_the_index():
    k = KinematicTeacher()
    good = TeacherRequest(rest_clip(), "smpl24", "a")
    with pytest.raises(ValueError, match=r"request 1: joints shaped \(60, 25, 3\) do not match "
                                         r"format 'smpl24': expected \(T, 24, 3\)"):
        k.rationales([good, TeacherRequest(np.zeros((T, 25, 3)), "smpl24", "a")])
    nan = rest_clip()
    nan[[5, 7], 3, 1] = np.nan
    with pytest.raises(ValueError,
                       match=r"request 2: joints has NaN/inf values in 2 frame\(s\): \[5, 7\]"):
        distill_rationales(k, [good, good, TeacherRequest(nan, "smpl24", "a")], None)
    with pytest.raises(ValueError, match="request 0: label"):
        k.rationales([TeacherRequest(rest_clip(), "smpl24", "two\nlines")])


def test_label_parsing_and_turning_points():
    assert ends_with_label("Because it waves.\nLabel: wave", "wave")
    assert ends_with_label("It waves. Label: wave  \n\n", "wave")
    assert not ends_with_label("Label: wave\nmore text", "wave")
    assert not ends_with_label("It is Label: kick Label: wave", "wave")
    assert not ends_with_label("Label: waves", "wave") and not ends_with_label("", "wave")
    s = np.sin(2 * np.pi * 3 * np.arange(T) / (T - 1))
    mx, mn = turning_points(s, 0.8)
    assert len(mx) == len(mn) == 3 and all(s[i] > 0.95 for i in mx)


# ------------------------------------------------------------------------- HF teacher


def test_hf_teacher_prompt_generation_and_validation(tiny_text_model_dir, tmp_path):
    label = "wave right hand"
    reqs = [TeacherRequest(wave_clip(), "smpl24", label, ("wave right hand", "kick left leg")),
            TeacherRequest(kick_clip(), "smpl24", "kick left leg", description="a forward kick")]
    t = make_teacher({"kind": "hf", "model_path": str(tiny_text_model_dir), "max_new_tokens": 6})
    assert t._model is None  # loaded on first use only
    p = t.prompt(reqs[0])
    assert p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n")
    assert "left and right 3 times" in p
    assert "Candidate actions: wave right hand; kick left leg." in p
    assert p.rstrip().count(f"End with the line: Label: {label}") == 1
    # the random model does not finish with the label line: invalid, counted, raw kept in the cache
    texts, stats = distill_rationales(t, reqs, tmp_path / "c.jsonl")
    assert texts == [None, None] and stats["invalid"] == 2 and stats["ok"] == 0
    raws = [r["raw"] for r in load_cache(tmp_path / "c.jsonl").values()]
    assert len(raws) == 2 and all(r.strip() for r in raws)
    # prefill + an LM head biased to EOS: the answer is exactly the prefill -> valid
    pre = "The right hand swings side to side three times.\nLabel: wave right hand"
    t2 = make_teacher({"kind": "hf", "model_path": str(tiny_text_model_dir), "max_new_tokens": 6,
                       "prefill": pre})
    head = t2.model.get_output_embeddings()
    bias = torch.zeros(head.out_features)
    bias[t2.tokenizer.eos_token_id] = 1e4
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    assert t2.rationales(reqs[:1]) == [pre]
    # biased to another token instead: generation appends it after the label -> invalid
    bias.zero_()
    bias[t2.tokenizer(" the", add_special_tokens=False).input_ids[0]] = 1e4
    texts, stats = distill_rationales(t2, reqs[:1], None)
    assert texts == [None] and stats["invalid"] == 1


# ------------------------------------------------------------------------- OpenAI teacher


class _Stub:
    def __init__(self):
        self.mode = "ok"
        self.calls = 0
        self.fail_first = 0  # this many 500s before answering
        self.hang_labels: set[str] = set()
        self.release = threading.Event()
        self.seen: list[tuple[str, str | None, dict]] = []
        self.lock = threading.Lock()


def _handler(stub: _Stub):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep the test output clean
            pass

        def _send(self, code: int, body: bytes, headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.calls += 1
                n = stub.calls
                stub.seen.append((self.path, self.headers.get("Authorization"), payload))
            if self.path != "/v1/chat/completions":
                return self._send(404, b"no such route")
            label = payload["messages"][-1]["content"].rsplit("Label: ", 1)[1].strip()
            if label in stub.hang_labels:
                stub.release.wait(10)
            if n <= stub.fail_first:
                return self._send(500, b"overloaded")
            if stub.mode == "malformed":
                return self._send(200, b"<html>not json")
            if stub.mode == "nochoices":
                return self._send(200, json.dumps({"object": "error"}).encode())
            answer = {"wrong": "It kicks.\nLabel: kick"}.get(
                stub.mode, f"The skeleton's motion matches it.\nLabel: {label}")
            self._send(200, json.dumps({"choices": [{"message": {"role": "assistant",
                                                                  "content": answer}}]}).encode())

    return H


@contextmanager
def stub_server():
    stub = _Stub()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    srv.handle_error = lambda *a: None  # a client that timed out closes its socket: not an error
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield stub, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        stub.release.set()
        srv.shutdown()
        srv.server_close()


def _reqs(*labels):
    return [TeacherRequest(wave_clip() + 0.001 * i, "smpl24", lab) for i, lab in enumerate(labels)]


def test_openai_success_auth_and_cache_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sekrit")
    cache = tmp_path / "cache" / "r.jsonl"
    with stub_server() as (stub, url):
        t = make_teacher({"kind": "openai", "base_url": url, "model": "m",
                          "api_key_env": "STUB_KEY", "timeout_s": 5, "max_tokens": 64})
        reqs = _reqs("a", "b", "c") + _reqs("a")[:1]  # the last one repeats the first
        texts, stats = distill_rationales(t, reqs, cache)
        assert stats == {"total": 4, "ok": 4, "invalid": 0, "failed": 0, "cached": 0,
                         "requested": 3}
        assert [x.splitlines()[-1] for x in texts] == ["Label: a", "Label: b", "Label: c",
                                                       "Label: a"]
        path, auth, payload = stub.seen[0]
        assert path == "/v1/chat/completions" and auth == "Bearer sekrit" and stub.calls == 3
        assert (payload["model"], payload["max_tokens"], payload["temperature"]) == ("m", 64, 0)
        assert "left and right 3 times" in payload["messages"][1]["content"]
        texts2, stats2 = distill_rationales(t, reqs, cache)
        assert stub.calls == 3 and texts2 == texts and stats2["cached"] == 4
        more = reqs + _reqs("d")
        texts3, stats3 = distill_rationales(t, more, cache, cache_only=True)
        assert stub.calls == 3 and texts3[:4] == texts and texts3[4] is None
        assert stats3["failed"] == 1 and stats3["requested"] == 0
        assert len(cache.read_text().splitlines()) == 3


def test_openai_retries_then_succeeds_or_gives_up(tmp_path):
    with stub_server() as (stub, url):
        stub.fail_first = 2
        t = make_teacher({"kind": "openai", "base_url": url, "model": "m", "backoff_s": 0.01})
        assert t.rationales(_reqs("a"))[0].endswith("Label: a") and stub.calls == 3
        stub.fail_first, stub.calls = 10, 0
        t1 = make_teacher({"kind": "openai", "base_url": url, "model": "m", "backoff_s": 0.01,
                           "max_retries": 1})
        with pytest.raises(TeacherError,
                           match=r"failed after 2 attempt\(s\): HTTP 500: overloaded"):
            t1.rationales(_reqs("a"))
        assert stub.calls == 2
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t2 = make_teacher({"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
                       "backoff_s": 0.01, "max_retries": 1})
    with pytest.raises(TeacherError, match=rf"127.0.0.1:{port}/v1/chat/completions failed after 2 "
                                           r"attempt\(s\): connection error"):
        t2.rationales(_reqs("a"))


def test_openai_timeout_keeps_finished_rationales_and_resumes(tmp_path):
    cache = tmp_path / "r.jsonl"
    with stub_server() as (stub, url):
        stub.hang_labels = {"slow"}
        t = make_teacher({"kind": "openai", "base_url": url, "model": "m", "timeout_s": 0.5,
                          "max_retries": 0, "concurrency": 3})
        reqs = _reqs("a", "slow", "c")
        with pytest.raises(TeacherTimeoutError) as e:
            distill_rationales(t, reqs, cache)
        msg = str(e.value)
        assert f"POST {url}/chat/completions timed out after 0.5 s" in msg
        assert "2 new rationale(s) were saved" in msg and str(cache) in msg
        assert len(load_cache(cache)) == 2
        stub.hang_labels, calls = set(), stub.calls
        texts, stats = distill_rationales(t, reqs, cache)
        assert stub.calls == calls + 1 and stats["cached"] == 2 and stats["ok"] == 3


def test_openai_malformed_wrong_label_and_masking(tmp_path):
    with stub_server() as (stub, url):
        t = make_teacher({"kind": "openai", "base_url": url, "model": "m"})
        stub.mode = "malformed"
        with pytest.raises(TeacherResponseError, match="is not JSON"):
            t.rationales(_reqs("a"))
        stub.mode = "nochoices"
        with pytest.raises(TeacherResponseError,
                           match=r"no non-empty 'choices' list \(got \['object'\]\)"):
            t.rationales(_reqs("a"))
        masked = make_teacher({"kind": "openai", "base_url": url, "model": "m", "errors": "mask"})
        texts, stats = distill_rationales(masked, _reqs("a"), tmp_path / "m.jsonl")
        assert texts == [None] and stats["failed"] == 1 and not load_cache(tmp_path / "m.jsonl")
        stub.mode, stub.calls = "wrong", 0
        texts, stats = distill_rationales(t, _reqs("a"), tmp_path / "w.jsonl")
        assert texts == [None] and stats["invalid"] == 1
        distill_rationales(t, _reqs("a"), tmp_path / "w.jsonl")
        assert stub.calls == 1  # invalid outcomes are cached too ...
        distill_rationales(t, _reqs("a"), tmp_path / "w.jsonl", retry_invalid=True)
        assert stub.calls == 2  # ... unless asked again


def test_make_teacher_rejects_bad_specs(monkeypatch):
    assert isinstance(make_teacher("kinematic"), KinematicTeacher)
    with pytest.raises(ValueError, match="'api_key' is not allowed"):
        make_teacher({"kind": "openai", "base_url": "http://x/v1", "model": "m", "api_key": "k"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temprature'\]"):
        make_teacher({"kind": "openai", "base_url": "http://x/v1", "model": "m", "temprature": 0})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['model'\]"):
        make_teacher({"kind": "openai", "base_url": "http://x/v1"})
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ValueError, match="'NOPE_KEY' is not set"):
        make_teacher({"kind": "openai", "base_url": "http://x/v1", "model": "m",
                      "api_key_env": "NOPE_KEY"})
    with pytest.raises(ValueError, match="teacher kind 'gpt' is unknown"):
        make_teacher({"kind": "gpt"})


def test_torn_cache_line_is_skipped_and_terminated(tmp_path):
    cache = tmp_path / "r.jsonl"
    k = KinematicTeacher()
    distill_rationales(k, _reqs("a"), cache)
    with open(cache, "a") as fh:
        fh.write('{"key": "abc", "sta')  # a crash mid-line
    texts, stats = distill_rationales(k, _reqs("a", "b"), cache)
    assert stats["cached"] == 1 and stats["ok"] == 2
    lines = cache.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["label"] == "b"
