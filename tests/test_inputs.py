"""hpelib.models.InputSpec: a model's record of its input, and crops of new pictures equal to the test crops."""
import numpy as np
import pytest
import torch

from hpelib.data import build_dataset
from hpelib.data.crops import AFLW2000_FACTORS
from hpelib.data.transforms import EVAL_CROP_FRACTION
from hpelib.engine.data import batch_inputs, make_loader
from hpelib.models import InputSpec, read_input_spec
from hpelib.models.inputs import input_spec_of


def test_a_face_box_is_cropped_exactly_as_the_test_set_crops_it(tiny_aflw2000):
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=32)
    spec = input_spec_of(ds)
    assert (spec.image_size, spec.box_k, spec.box_factors, spec.crop_fraction) == (32, 0.2, AFLW2000_FACTORS,
                                                                                   EVAL_CROP_FRACTION)
    for i in range(len(ds)):  # the picture and its tight face box -> the very tensor evaluate() sees
        assert torch.equal(spec.crop(ds.load(i), ds.face_boxes.boxes[i]), ds[i][0])
    # and the engine's batches (uint8 items, finished on the device) are the same tensors
    loader = make_loader(ds, 3, shuffle=False, num_workers=0, device=torch.device("cpu"), drop_last=False)
    images = torch.cat([batch_inputs(b, torch.device("cpu"))[0] for b in loader])
    assert torch.equal(images, torch.stack([spec.crop(ds.load(i), ds.face_boxes.boxes[i]) for i in range(len(ds))]))


def test_a_face_crop_without_box_is_taken_whole_as_whole_picture_sets_do(tmp_path):
    ds = build_dataset("synthetic", root=tmp_path, split="test", n=4, image_size=24, train=False)
    spec = input_spec_of(ds)
    assert spec.crop_fraction == 1.0  # rendered heads are already face crops
    for i in range(len(ds)):
        assert torch.equal(spec.crop(np.asarray(ds.load(i)), None), ds[i][0])


def test_training_sets_give_the_test_crop_that_goes_with_them(tiny_aflw2000):
    train = build_dataset("aflw2000", root=tiny_aflw2000, train=True, image_size=32)
    assert input_spec_of(train).crop_fraction == EVAL_CROP_FRACTION  # not the training crop's 224/240


def test_round_trip_and_refusals():
    spec = InputSpec(image_size=64, box_k=0.3)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert "Rz(roll) Ry(yaw) Rx(pitch)" in spec.angles
    with pytest.raises(ValueError, match="ImageNet's mean/std"):
        InputSpec(image_size=64, mean=(0.5, 0.5, 0.5))


def test_read_input_spec_from_a_model_and_from_an_older_run_folder(tmp_path):
    from hpelib.experiment import demo_model

    model_pt = demo_model(tmp_path / "demo", image_size=24, steps=1)
    spec = read_input_spec(model_pt)
    assert spec.image_size == 24 and spec.crop_fraction == 1.0 and read_input_spec(model_pt.parent) == spec
    saved = torch.load(model_pt, weights_only=True)
    saved.pop("input")  # a model.pt written before the input was recorded
    torch.save(saved, model_pt)
    # the run's image size, the test crop of that time, defaults for the rest
    assert read_input_spec(model_pt) == InputSpec(image_size=24, crop_fraction=224 / 256)
    (model_pt.parent / "config.json").unlink()
    with pytest.raises(ValueError, match="records no input spec"):
        read_input_spec(model_pt)
