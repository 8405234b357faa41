"""The ``transformers`` backend on tiny random-weight LLaVA and Idefics3 models.

The models are built here, offline, into tmp_path (tests/servers/tiny_vlm.py).
Their weights are random, so their answers are noise: these tests prove the code
path (local loading, chat template, image batching, batched generate, decoding,
re-ask, rejects with the raw text), not annotation quality.
"""

from __future__ import annotations

import pytest

from relshard.errors import SpecError
from relshard.spec import TransformersAnnotate
from relshard.workers.annotate.base import AnnotationFailure, preflight
from relshard.workers.annotate.hf_backend import TransformersAnnotator
from relshard.workers.annotate.prompts import PromptSet
from relshard.workers.annotate.stage import AnnotateStage
from tests.unit.workers.annotate.helpers import draft

pytest.importorskip("transformers")
pytest.importorskip("torch")


@pytest.fixture(scope="module", params=["llava", "idefics3"])
def tiny_model(request, tmp_path_factory):
    from tests.servers import tiny_vlm

    build = tiny_vlm.build_llava if request.param == "llava" else tiny_vlm.build_idefics3
    return build(tmp_path_factory.mktemp(request.param))


def _cfg(path, **over) -> TransformersAnnotate:
    return TransformersAnnotate.model_validate({
        "backend": "transformers", "model_path": str(path), "device": "cpu",
        "max_new_tokens": 16, "batch_size": 4, "image_max_side": 64, **over})


def test_batched_generation_runs_and_noise_is_rejected_with_raw_text(tiny_model):
    ann = TransformersAnnotator(_cfg(tiny_model))
    preflight(ann)
    ann.setup()
    assert ann.vlm.device == "cpu" and str(ann.vlm.dtype) == "torch.float32"
    results = ann.annotate([draft(2, f"k{i}", seed=i) for i in range(5)])
    ann.teardown()
    # 5 first asks and 5 re-asks, gathered into batches of at most 4
    assert sum(ann.batcher.batches) == 10 and max(ann.batcher.batches) == 4
    assert all(isinstance(r, AnnotationFailure) for r in results)
    assert {r.reason for r in results} == {"invalid_output"}
    assert all(r.attempts == 2 and r.raw_output is not None for r in results)


@pytest.mark.slow
def test_text_only_and_image_requests_generate_in_one_call(tiny_model):
    ann = TransformersAnnotator(_cfg(tiny_model))
    ann.setup()
    prompts = PromptSet("v1")
    sample = draft(1)
    from relshard.workers.annotate.visual import sample_images

    images, positions = sample_images(sample, marks="boxes", frames_per_request=1, max_side=64)
    with_image = prompts.request("caption", images, positions, subjects=sample.subjects,
                                 state={}, marks="boxes")
    text_only = prompts.request("relcaption", images, positions, subjects=sample.subjects,
                                state={}, marks="boxes")
    assert text_only.images == []
    answers = ann.vlm.generate([with_image, text_only, with_image])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert answers[0] == answers[2]  # greedy: same request, same answer
    ann.teardown()


def test_subject_grounding_runs_through_the_local_model(tiny_model):
    ann = TransformersAnnotator(_cfg(tiny_model, prompt_mode="staged", subjects="model"))
    ann.setup()
    seen = []
    generate = ann.vlm.generate
    ann.vlm.generate = lambda reqs: (seen.extend(reqs), generate(reqs))[1]
    [res] = ann.annotate([draft(2)])
    ann.teardown()
    assert seen[0].step == "ground" and len(seen[0].images) == 1
    text = seen[0].messages[-1]["content"][-1]["text"]
    assert "(none detected)" in text and '"bbox_2d"' in text
    # random weights answer noise: rejected after a re-ask, or (rarely) usable
    assert isinstance(res, AnnotationFailure) or res.provenance.prompt_version.endswith(
        "/staged/subjects=model")


def test_model_path_is_checked_before_work(tmp_path):
    with pytest.raises(SpecError, match="no config.json"):
        preflight(TransformersAnnotator(_cfg(tmp_path / "missing")))


def test_gpu_count_comes_from_the_spec(tmp_path):
    assert AnnotateStage(_cfg(tmp_path, device="cuda")).resources.num_gpus == 1
    assert AnnotateStage(_cfg(tmp_path, num_gpus=0.5)).resources.num_gpus == 0.5
    assert AnnotateStage(_cfg(tmp_path)).resources.num_gpus == 0
    assert AnnotateStage(_cfg(tmp_path)).stateful
