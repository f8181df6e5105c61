"""Detection, landmarks, descriptors and alignment on real pictures (scikit-image's astronaut)."""

from __future__ import annotations

import cv2
import dlib
import numpy as np
import pytest
import skimage.data

from facevae.core.errors import FaceVAEError
from facevae.faces.align import (
    TEMPLATE_68,
    FaceAligner,
    eye_centres,
    head_pose,
    pose_measures,
    template_in_crop,
    transform_points,
    umeyama,
)
from facevae.faces.descriptor import DescriptorWeights
from facevae.faces.detect import (
    CnnDetector,
    FaceEncoder,
    HogDetector,
    box_iou,
    face_shape,
    model_path,
    to_grey,
)
from facevae.faces.landmarks import EYES, MOUTH, SUBJECT_LEFT_EYE, SUBJECT_RIGHT_EYE
from tests.media import astronaut_frames


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner(crop_size=64, coverage=1.6, detector=HogDetector(detect_width=256, upsample=1))


@pytest.fixture(scope="module")
def astronaut():
    return astronaut_frames(1)[0]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Counter-clockwise on screen, about the centre."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_dlib_models_are_found_without_importing_their_package():
    for name in ("shape_predictor_68_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
        assert model_path(name).is_file()
    with pytest.raises(FaceVAEError, match="dlib model file is missing") as info:
        model_path("no_such_model.dat")
    assert info.value.path.name == "no_such_model.dat"


def test_umeyama_recovers_a_similarity():
    points = np.random.default_rng(0).normal(size=(13, 2)) * 50
    angle, scale, shift = np.radians(25), 1.7, np.array([12.0, -7.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ (scale * rotation).T + shift
    matrix = umeyama(points, moved)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


def test_hog_boxes_come_back_in_source_pixels(astronaut):
    full = HogDetector(detect_width=256, upsample=1).detect(astronaut)
    small = HogDetector(detect_width=128, upsample=1).detect(astronaut)  # detects on a half-size copy
    assert len(full) == len(small) == 1
    assert box_iou(full[0].box, small[0].box) > 0.6


def test_cnn_detector_finds_the_face(astronaut):
    found = CnnDetector(detect_width=128, upsample=1).detect(astronaut)
    hog = HogDetector(detect_width=256).detect(astronaut)
    assert len(found) == 1 and box_iou(found[0].box, hog[0].box) > 0.5


def test_no_face_in_a_cup_of_coffee(aligner):
    assert aligner.align(skimage.data.coffee()) == []
    assert aligner.align_one(skimage.data.coffee()) is None


def assert_eyes_on_template(face, crop_size=64, coverage=1.6, tolerance_px=2.5):
    template = template_in_crop(crop_size, coverage)
    for eye in (SUBJECT_RIGHT_EYE, SUBJECT_LEFT_EYE):
        assert np.linalg.norm(face.landmarks[eye].mean(axis=0) - template[eye].mean(axis=0)) < tolerance_px


def test_aligned_crop_puts_the_eyes_on_the_template(aligner, astronaut):
    face = aligner.align_one(astronaut)
    assert face.crop.shape == (64, 64, 3) and face.crop.dtype == np.uint8
    assert_eyes_on_template(face)
    # the matrix maps source landmarks to the crop landmarks reported
    assert np.allclose(transform_points(face.matrix, face.source_landmarks), face.landmarks)
    assert abs(face.roll_deg) < 8 and abs(face.yaw) < 0.3
    assert 80 < face.face_px < 140 and face.sharpness > 50


def test_a_tilted_head_is_measured_and_straightened(aligner, astronaut):
    upright = aligner.align_one(astronaut)
    tilted = aligner.align_one(rotate(astronaut, 12))
    assert tilted.roll_deg == pytest.approx(upright.roll_deg - 12, abs=3)
    assert_eyes_on_template(tilted)


def test_crop_size_and_coverage_are_honoured(astronaut):
    aligner = FaceAligner(crop_size=96, coverage=2.2, detector=HogDetector(detect_width=256))
    face = aligner.align_one(astronaut)
    assert face.crop.shape == (96, 96, 3)
    assert_eyes_on_template(face, crop_size=96, coverage=2.2, tolerance_px=4)


def test_a_stranger_goes_through_the_same_path(aligner, astronaut):
    """align() is detect + landmarks + align_landmarks: a tracker or a driver's frame that
    supplies the landmarks gets exactly the same crop."""
    face = aligner.align_one(astronaut)
    again = aligner.align_landmarks(astronaut, aligner.landmarks(to_grey(astronaut), face.box), box=face.box)
    assert np.array_equal(face.crop, again.crop) and np.allclose(face.matrix, again.matrix)


def test_blur_lowers_sharpness(aligner, astronaut):
    face = aligner.align_one(astronaut)
    blurred = aligner.align_landmarks(cv2.GaussianBlur(astronaut, (0, 0), 3), face.source_landmarks)
    assert blurred.sharpness < face.sharpness / 3


def test_pose_measures_of_the_template():
    landmarks = TEMPLATE_68 * 40 + 100  # a frontal face, eye centres 40 * ~0.96 px apart
    roll_deg, yaw, face_px = pose_measures(landmarks)
    left, right = eye_centres(landmarks)
    assert abs(roll_deg) < 2 and abs(yaw) < 0.05
    assert face_px == pytest.approx(2.5 * np.linalg.norm(right - left))
    turned = landmarks.copy()
    turned[30, 0] += 0.5 * np.linalg.norm(right - left) / 2  # nose tip half way to an eye
    assert pose_measures(turned)[1] == pytest.approx(yaw + 0.5, abs=0.01)


def test_head_pose_follows_the_nose_not_the_expression_or_the_framing(aligner, astronaut):
    landmarks = aligner.align_one(astronaut).source_landmarks.astype(np.float64)
    pose = head_pose(landmarks)[0]
    assert abs(pose[0]) < 0.1 and 0.05 < pose[1] < 0.6  # near frontal; the nose tip below the ear-level outline
    # a similarity (the crop's alignment, another camera distance) changes nothing
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(head_pose(1.7 * landmarks @ rotation.T + [40, -15])[0], pose, atol=1e-9)
    # a smile, an open mouth, a squint: the measure does not move
    expression = landmarks.copy()
    expression[MOUTH] += [[0, 6]] * 20
    expression[EYES, 1] += 2
    np.testing.assert_allclose(head_pose(expression)[0], pose, atol=1e-12)
    # the nose tip moved a tenth of the face width toward one ear: yaw moves by a tenth, pitch stays
    width = np.linalg.norm(landmarks[16] - landmarks[0])
    turned = landmarks.copy()
    turned[30] += 0.1 * (landmarks[16] - landmarks[0])
    np.testing.assert_allclose(head_pose(turned)[0], pose + [0.1, 0.0], atol=1e-9)
    assert width > 50


def test_descriptors_tell_the_same_person(aligner):
    encoder = FaceEncoder()
    first, later = astronaut_frames(8)[0], astronaut_frames(8)[7]
    a = encoder.encode(first, aligner.align_one(first).source_landmarks)
    b = encoder.encode(later, aligner.align_one(later).source_landmarks)
    assert a.shape == (128,) and np.linalg.norm(a - b) < 0.3


def test_the_descriptor_network_gives_dlibs_own_descriptors(aligner):
    """facevae.faces.descriptor runs dlib's network in torch: same chips, same weights, same numbers."""
    dlib_model = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
    frames = [*astronaut_frames(8)[::3], rotate(astronaut_frames(1)[0], 12)]
    small = cv2.resize(cv2.resize(frames[0], (96, 96), interpolation=cv2.INTER_AREA), (384, 384))  # an enlarged small face
    frames.append(small)
    landmarks = [aligner.align_one(f).source_landmarks for f in frames]
    encoder = FaceEncoder()
    ours = encoder.encode_many(frames, landmarks, batch=3)
    for frame, lm, descriptor in zip(frames, landmarks, ours):
        theirs = np.array(dlib_model.compute_face_descriptor(frame, face_shape(lm)))
        assert np.abs(descriptor - theirs).max() < 1e-4
    assert np.allclose(encoder.encode(frames[1], landmarks[1]), ours[1], atol=1e-6)  # one face or a batch: the same


def test_a_file_that_is_not_the_descriptor_network_is_a_clear_error():
    with pytest.raises(FaceVAEError, match="shape_predictor_5_face_landmarks.dat: not dlib.s face descriptor network"):
        DescriptorWeights.from_dlib_file(model_path("shape_predictor_5_face_landmarks.dat"))
