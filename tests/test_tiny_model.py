import numpy as np
from conftest import assert_outputs_vary


def test_tiny_model_outputs_vary_from_image_to_image(tiny_model, sample_pixels_tiny):
    probabilities = tiny_model.predict(sample_pixels_tiny / 255.0, verbose=0)
    assert probabilities.shape == (len(sample_pixels_tiny), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert_outputs_vary(probabilities)
    assert len(set(probabilities.argmax(axis=1))) >= 2
