"""A tiled multi-panel detector model (CSPAD/JUNGFRAU-like), for tests and benchmarks.

Panels of equal size sit on a square grid with gaps between them, around a
central hole that the direct beam passes through; the whole detector may be
tilted about the lab x axis, so that powder rings are ellipses whose centres
are off the beam (as on real detectors). Every panel is a flat dxtbx panel
with a simple pixel-to-mm mapping.
"""

import numpy as np


def tiled_detector(
    tiles=8,
    panel_shape=(256, 256),
    pixel_mm=0.11,
    gap_px=4,
    hole_px=0,
    distance_mm=100.0,
    tilt_deg=0.0,
    trusted_range=(-10, 1e6),
):
    """A dxtbx Detector of tiles x tiles panels around the beam.

    Parameters
    ----------
    tiles : int
        Panels per side (8: 64 panels).
    panel_shape : (rows, columns)
        Pixels per panel.
    pixel_mm : float
        Pixel size in mm.
    gap_px : int
        Gap between neighbouring panels, px.
    hole_px : int
        Extra gap at the centre (the beam passes through it), px.
    distance_mm : float
        Distance from the sample to the detector centre along the beam, mm.
    tilt_deg : float
        Rotation of the detector about the lab x axis, degrees.
    trusted_range : (float, float)

    Returns
    -------
    dxtbx Detector
        Panel k = row * tiles + column, fast along +x and slow along -y
        before the tilt; the beam (along -z) hits the centre of the hole.
    """
    from dxtbx.model import Detector
    from scitbx import matrix

    rows, columns = panel_shape
    rotation = matrix.col((1.0, 0.0, 0.0)).axis_and_angle_as_r3_rotation_matrix(
        tilt_deg, deg=True
    )
    fast = rotation * matrix.col((1.0, 0.0, 0.0))
    slow = rotation * matrix.col((0.0, -1.0, 0.0))
    centre = matrix.col((0.0, 0.0, -distance_mm))
    pitch_x = (columns + gap_px) * pixel_mm
    pitch_y = (rows + gap_px) * pixel_mm
    hole = hole_px * pixel_mm
    detector = Detector()
    for k in range(tiles * tiles):
        row, column = divmod(k, tiles)
        # Lower-left corner of the panel in the detector plane (mm), the
        # hole splitting the grid in two halves each way.
        x = (column - tiles / 2) * pitch_x + gap_px * pixel_mm / 2
        y = (tiles / 2 - row) * pitch_y - gap_px * pixel_mm / 2
        x += hole / 2 if column >= tiles / 2 else -hole / 2
        y += hole / 2 if row < tiles / 2 else -hole / 2
        origin = centre + fast * x + (-slow) * y
        panel = detector.add_panel()
        panel.set_type("SENSOR_PAD")
        panel.set_name(f"panel_{k}")
        panel.set_image_size((columns, rows))
        panel.set_pixel_size((pixel_mm, pixel_mm))
        panel.set_trusted_range(trusted_range)
        panel.set_frame(fast.elems, slow.elems, origin.elems)
    return detector


def panel_pixel_lab_mm(panel):
    """Lab coordinates (mm) of every pixel centre of a flat panel: (rows, columns, 3)."""
    n_fast, n_slow = panel.get_image_size()
    pixel = panel.get_pixel_size()
    x = (np.arange(n_fast) + 0.5) * pixel[0]
    y = (np.arange(n_slow) + 0.5) * pixel[1]
    origin = np.array(panel.get_origin())
    f_axis = np.array(panel.get_fast_axis())
    s_axis = np.array(panel.get_slow_axis())
    return (
        origin
        + x[None, :, None] * f_axis[None, None, :]
        + y[:, None, None] * s_axis[None, None, :]
    )
