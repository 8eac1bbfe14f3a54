"""`python -m qcxr.bench loader` (README, docs/data.md) in a quick form: it crashed before timing
anything (the CSV it generated listed two images in two splits, refused by the index as a leak).
"""

from qcxr.bench.__main__ import main


def test_bench_loader_prints_images_per_second(tmp_path, capfd):
    # main() configures logging itself (basicConfig on stderr), as the command line does.
    argv = ["loader", "--num-images", "8", "--source-size", "32", "--image-size", "16"]
    argv += ["--batch-size", "4", "--threads", "1", "--device-images", "4"]
    assert main([*argv, "--workdir", str(tmp_path)]) == 0
    text = capfd.readouterr().err
    assert "threads 1: cold" in text and "img/s" in text
    assert "| threads | augmentation | cold cache (img/s) | warm cache (img/s) |" in text
