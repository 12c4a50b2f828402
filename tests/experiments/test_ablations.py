"""The grouped fine-tuning study's schedule: every variant's training length, without training."""

from highmodal.config import AUTO_EPOCHS, ExperimentConfig, TrainConfig
from highmodal.data import LoadContext, build_suite
from highmodal.experiments import ablations, run
from highmodal.experiments.ablations import GroupingVariant


def test_a_suite_without_epochs_pretrains_the_default_length_and_scratch_gets_the_same_total(monkeypatch,
                                                                                            tmp_path):
    trained = []

    def fake_train(exp, out, *args, **kwargs):
        trained.append((exp.name, exp.train.epochs, kwargs.get("init")))
        return out, {"digits": {"skill": 0.5}}, {"params": 1}

    monkeypatch.setattr(run, "train_experiment", fake_train)
    suite = build_suite([{"name": "digits", "source": "sklearn_digits"}], LoadContext(seed=0))
    base = ExperimentConfig(name="s", tasks=[{"name": "digits", "source": "sklearn_digits"}], train=TrainConfig())
    rows = ablations.compare(base, tmp_path, suite, {}, [GroupingVariant("share_all", "share_all"),
                             GroupingVariant("no_pretraining", "share_all", init="scratch")], 1, 3,
                             {"unimodal": 1, "crossmodal": 1}, tmp_path, progress=False, log=lambda *_: None)
    assert [(name, epochs, init is not None) for name, epochs, init in trained] == [
        ("shared-all", AUTO_EPOCHS, False), ("share_all", 3, True), ("no_pretraining", AUTO_EPOCHS + 3, False)]
    assert rows["no_pretraining"]["skills"] == [50.0]
