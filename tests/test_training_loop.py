"""The one epoch loop: CPU results as before the GPU rework, early stopping, precision, per-data-set budgets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, make_images
from mtssad import DetectorConfig, MultiTaskDetector
from mtssad.stopping import EarlyStopping, held_out_metrics
from mtssad.train import (amp_dtype, batch_order, fit_epochs, make_optimizer, make_scheduler, plan_loss, planned_epochs,
                          seed_everything, to_model_input)


def _reference_plan_loss(logits, plan, n_images):
    """Eq. 7 as the loop computed it before: a boolean mask per head, counts read with int()."""
    labels = plan.labels.to(next(iter(logits.values())).device)
    loss, correct = 0.0, {}
    for i, head in enumerate(plan.heads):
        y = labels[:, i].repeat_interleave(n_images)
        mask = y >= 0
        lg, yy = logits[head.name][mask].float(), y[mask]
        loss = loss + F.cross_entropy(lg, yy, reduction="sum") * (plan.loss_weight / n_images)
        correct[head.name] = int((lg.argmax(1) == yy).sum())
    return loss, correct


def _reference_fit(det, X, config):
    """The local loop before run_epochs: per-step float() of the loss, host-side sums, one generator."""
    gen = seed_everything(config.seed)
    det.init_model(tuple(X.shape[1:]))
    model, plan = det.model_, det.plan_
    opt = make_optimizer(model, config)
    steps = len(batch_order(len(X), config.batch_size, torch.Generator().manual_seed(0)))
    epochs = planned_epochs(steps, config)
    sched = make_scheduler(opt, steps * epochs)
    losses = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for idx in batch_order(len(X), config.batch_size, gen):
            model.train()
            x = to_model_input(X[idx], torch.device("cpu"))
            logits = model(plan.make(x, train=True, generator=gen))
            loss, _ = _reference_plan_loss(logits, plan, len(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        losses.append(total / n)
    return model.state_dict(), losses


def test_cpu_training_is_bit_identical_to_the_loop_before_the_gpu_rework():
    X = torch.from_numpy(make_images(21, seed=4))
    params = dict(TINY, epochs=3, batch_size=8, seed=5)
    ref_state, ref_losses = _reference_fit(MultiTaskDetector(**params), X, DetectorConfig(**params))
    det = MultiTaskDetector(**params)
    config = det.config
    gen = seed_everything(config.seed)
    det.init_model(tuple(X.shape[1:]))
    history = fit_epochs(det.model_, det.plan_, X, det.config_, device=torch.device("cpu"), generator=gen)
    assert [h["loss"] for h in history] == ref_losses  # exact, not approximate
    for k, v in ref_state.items():
        assert torch.equal(v, det.model_.state_dict()[k]), k


@pytest.mark.parametrize("method", ["ours", "mhrot"])
def test_indexed_plan_loss_equals_the_boolean_mask_loss(method):
    from mtssad.methods import make_method

    det = make_method(method, **TINY).init_model((1, 16, 16))
    x = to_model_input(torch.from_numpy(make_images(5)), torch.device("cpu"))
    logits = det.model_(det.plan_.make(x, train=True, generator=torch.Generator().manual_seed(0)))
    loss, correct, counted = plan_loss(logits, det.plan_, 5)
    ref_loss, ref_correct = _reference_plan_loss(logits, det.plan_, 5)
    assert torch.equal(loss, ref_loss)
    assert {h: int(v) for h, v in correct.items()} == ref_correct
    assert counted == {h.name: int((det.plan_.labels[:, i] >= 0).sum()) * 5 for i, h in enumerate(det.plan_.heads)}


def test_early_stopping_stops_after_patience_and_puts_the_best_weights_back():
    model = torch.nn.Linear(2, 1)
    values = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    stopper = EarlyStopping(lambda: {"val_auroc": next(values)}, monitor="val_auroc", every=10, patience=2)
    assert not stopper.due(9) and stopper.due(10) and stopper.due(3, last=True)
    kept = None
    for steps in (10, 20, 30, 40):
        with torch.no_grad():
            model.weight.fill_(steps)  # the weights "at" this step
        stop = stopper.update(steps, model)
        if steps == 20:
            kept = model.weight.clone()
        assert stop == (steps == 40)  # 0.6 and 0.65 do not beat 0.7: two without improvement
    assert stopper.best_step == 20 and stopper.best_value == 0.7
    stopper.restore_best(model)
    assert torch.equal(model.weight, kept)
    loss_rule = EarlyStopping(lambda: {"val_loss": 1.0}, monitor="val_loss", every=1, patience=1)
    assert not loss_rule.update(1, model) and loss_rule.update(2, model)  # lower is better; a tie is no improvement


def test_measuring_does_not_change_training():
    """Measurements save and restore BatchNorm statistics and use no training random stream: a fit that is
    measured every epoch ends with exactly the weights and buffers of one that is not (what lets the budget
    study replay a stopping rule from one trajectory)."""
    X = torch.from_numpy(make_images(24, seed=1))
    X_val = torch.from_numpy(np.concatenate([make_images(6, seed=2), make_images(6, kind="anomaly", seed=3)]))
    y_val = np.r_[np.ones(6, bool), np.zeros(6, bool)]

    def run(measured: bool):
        det = MultiTaskDetector(**dict(TINY, epochs=4))
        gen = seed_everything(det.config.seed)
        det.init_model(tuple(X.shape[1:]))
        stopper = None
        if measured:
            m = held_out_metrics(det.model_, det.plan_, device=torch.device("cpu"), X_train=X,
                                 normals=X_val[torch.from_numpy(y_val)], X_val=X_val, y_val=y_val)
            stopper = EarlyStopping(m, monitor="val_auroc", every=1, patience=None)
            stopper.restore_best = lambda model: None  # compare the trained weights, not the kept ones
        history = fit_epochs(det.model_, det.plan_, X, det.config_, device=torch.device("cpu"), generator=gen,
                             stopper=stopper)
        return det.model_.state_dict(), history, stopper

    plain, h_plain, _ = run(False)
    measured, h_measured, stopper = run(True)
    assert len(stopper.trace) == 4 and {"val_auroc", "val_loss"} <= set(stopper.trace[0])
    assert [h["loss"] for h in h_plain] == [h["loss"] for h in h_measured]
    for k in plain:
        assert torch.equal(plain[k], measured[k]), k


def test_detector_early_stopping_records_steps_and_needs_held_out_data(tmp_path):
    X = make_images(40, seed=1)
    X_val = np.concatenate([make_images(8, seed=2), make_images(8, kind="anomaly", seed=3)])
    y_val = np.r_[np.ones(8, int), np.zeros(8, int)]
    with pytest.raises(ValueError, match='early_stopping="val_auroc" needs labelled held-out images.*got no X_val'):
        MultiTaskDetector(**dict(TINY, early_stopping="val_auroc")).fit(X)
    with pytest.raises(ValueError, match="val_loss.*needs held-out normal images"):
        MultiTaskDetector(**dict(TINY, early_stopping="val_loss", calibration_fraction=0)).fit(X)
    det = MultiTaskDetector(**dict(TINY, epochs=8, early_stopping="val_auroc", eval_every=5, patience=1))
    det.fit(X, X_val=X_val, y_val=y_val)
    assert 0 < det.best_step_ <= det.steps_trained_ <= 8 * 5
    assert det.steps_trained_ == det.history_[-1]["steps"]
    assert any("stop/val_auroc" in h for h in det.history_)
    back = MultiTaskDetector.load(det.save(tmp_path / "d.pt"))
    assert (back.steps_trained_, back.best_step_) == (det.steps_trained_, det.best_step_)
    # val_loss needs no anomalies: the calibration hold-out of X serves as held-out normals
    det = MultiTaskDetector(**dict(TINY, epochs=3, early_stopping="val_loss", eval_every=5)).fit(X)
    assert any("stop/val_loss" in h for h in det.history_)
    with pytest.raises(ValueError, match="early_stopping must be one of"):
        DetectorConfig(early_stopping="auroc")


def test_amp_uses_bfloat16_where_supported_and_float16_only_on_request_or_without_it(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_dtype(DetectorConfig(amp=True), cpu) is None  # CPU: float32 always
    assert amp_dtype(DetectorConfig(amp=False), cuda) is None
    import mtssad.train

    monkeypatch.setattr(mtssad.train, "native_bf16", lambda device: True)  # an Ampere-or-later GPU
    assert amp_dtype(DetectorConfig(amp=True), cuda) == torch.bfloat16
    assert amp_dtype(DetectorConfig(amp=True, amp_dtype="float16"), cuda) == torch.float16
    monkeypatch.setattr(mtssad.train, "native_bf16", lambda device: False)  # a T4/V100: bfloat16 only emulated
    assert amp_dtype(DetectorConfig(amp=True), cuda) == torch.float16  # paired with a GradScaler by prepare_training
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        DetectorConfig(amp_dtype="fp8")


def test_the_data_sets_training_budget_is_the_command_lines_default():
    from mtssad.cli import build_parser
    from mtssad.flags import method_params
    from mtssad.data import default_min_steps

    assert default_min_steps("digits") == 50 and default_min_steps("glyphs") == DetectorConfig().min_steps == 300
    parser = build_parser()
    assert method_params(parser.parse_args(["evaluate"]))["min_steps"] == 50
    assert method_params(parser.parse_args(["evaluate", "--dataset", "glyphs"]))["min_steps"] == 300
    assert method_params(parser.parse_args(["evaluate", "--min-steps", "7"]))["min_steps"] == 7


def test_the_fit_ends_with_the_weights_of_its_best_measurement():
    """Scripted measurements: the 2nd is best, patience 2 stops at the 4th; the model must hold the 2nd's weights."""
    X = torch.from_numpy(make_images(16, seed=1))
    det = MultiTaskDetector(**dict(TINY, epochs=10, batch_size=8))
    gen = seed_everything(det.config.seed)
    det.init_model(tuple(X.shape[1:]))
    values, seen = iter([0.1, 0.9, 0.2, 0.3, 0.95]), []

    def measure():
        seen.append({k: v.clone() for k, v in det.model_.state_dict().items()})
        return {"val_auroc": next(values)}

    stopper = EarlyStopping(measure, monitor="val_auroc", every=2, patience=2)
    history = fit_epochs(det.model_, det.plan_, X, det.config_, device=torch.device("cpu"), generator=gen,
                         stopper=stopper)
    assert [h["steps"] for h in history][-1] == 8 and len(seen) == 4  # stopped: 4 measurements, 2 steps apart
    assert stopper.best_step == 4
    for k, v in det.model_.state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    assert any(not torch.equal(v, seen[3][k]) for k, v in seen[1].items())  # the weights did move on after it


def test_reading_the_epoch_sums_late_gives_the_same_history():
    """One GPU process reads its loss/accuracy sums every READ_EVERY epochs; on the CPU, read_every shows it is
    the same history as reading every epoch."""
    from mtssad.train import prepare_training, run_epochs

    X = torch.from_numpy(make_images(20, seed=3))

    def run(read_every):
        det = MultiTaskDetector(**dict(TINY, epochs=7))
        gen = seed_everything(0)
        det.init_model(tuple(X.shape[1:]))
        training = prepare_training(det.model_, det.config_, len(X), torch.device("cpu"))
        return run_epochs(det.model_, det.plan_, X, det.config_, training, device=torch.device("cpu"),
                          order_generator=gen, read_every=read_every)

    every, late = run(1), run(3)
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in every] == [strip(h) for h in late]
    assert all("loss" in h and "acc_train/jigsaw" in h for h in late)
