"""The DECTRIS master file header: one parser for every reader of ours.

A DECTRIS filewriter (SIMPLON) master ``*_master.h5`` links its frames as
``/entry/data/data_NNNNNN`` (external links to the data files) and carries a
flat detector header: ``/entry/instrument/detector/x_pixel_size`` ... and
``detectorSpecific/`` (``countrate_correction_count_cutoff``,
``photon_energy``, ``pixel_mask``, ``x_pixels_in_detector`` ...). Older
firmware writes some values under ``detectorSpecific``, newer firmware and
NXmx files directly under the detector group: both are looked at, the
detector group's ``detectorSpecific`` first.

`read_header` gives the values both readers need: dxtbx's
`FormatEigerFilewriter` (models) and `images.eiger.EigerMasterSource`
(frames, mask, saturation). `is_flat_dectris_master` is the positive marker by
which `FormatEigerFilewriter` claims a file. The simulator writes these files
(`dials_diffuse.simulate.eiger_files`).
"""

import dataclasses
import re

import h5py
import numpy as np

DETECTOR = "/entry/instrument/detector"
SPECIFIC = DETECTOR + "/detectorSpecific"
GONIOMETER = "/entry/sample/goniometer"
DATA_LINK = re.compile(r"data_\d{6}$")
#: ħc in eV·Å, to convert photon energy to wavelength.
HC_EV_ANGSTROM = 12398.419843320026


def scalar(handle, path):
    """A scalar dataset of the file (bytes decoded and stripped), or None."""
    item = handle.get(path)
    if not isinstance(item, h5py.Dataset) or item.shape not in ((), (1,)):
        return None
    value = item[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(()).item() if value.size == 1 else value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode().strip()
    return value


def header_value(handle, *names):
    """The first of `names` found in detectorSpecific, then in the detector group."""
    for group in (SPECIFIC, DETECTOR):
        for name in names:
            value = scalar(handle, f"{group}/{name}")
            if value is not None:
                return value
    return None


def data_links(handle):
    """Names of the /entry/data/data_NNNNNN entries, in order."""
    group = handle.get("/entry/data")
    if not isinstance(group, h5py.Group):
        return []
    return sorted(name for name in group if DATA_LINK.match(name))


def has_nxmx_detector_geometry(handle):
    """True when the detector is placed by NXmx: a `depends_on` chain and a module."""
    detector = handle.get(DETECTOR)
    if not isinstance(detector, h5py.Group) or "depends_on" not in detector:
        return False
    return any(
        _nx_class(item) == "NXdetector_module"
        for item in detector.values()
        if isinstance(item, h5py.Group)
    )


def nxmx_bit_depth_readout(handle):
    """``bit_depth_readout`` of the file's NXdetector, or None.

    The detector is found as dxtbx finds it: the first NXdetector of the
    first NXinstrument of the first NXentry.
    """
    group = handle
    for nx_class in ("NXentry", "NXinstrument", "NXdetector"):
        group = next(
            (
                item
                for item in group.values()
                if isinstance(item, h5py.Group) and _nx_class(item) == nx_class
            ),
            None,
        )
        if group is None:
            return None
    return scalar(group, "bit_depth_readout")


def _nx_class(item):
    value = item.attrs.get("NX_class", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def is_flat_dectris_master(handle):
    """The positive marker of a DECTRIS master whose geometry is the flat header.

    DECTRIS's data-file links ``/entry/data/data_NNNNNN`` and the flat
    header's pixel sizes (``x_pixel_size``, ``y_pixel_size`` of the detector),
    and no NXmx placement of the detector (a file with NXmx geometry is
    dxtbx's, whatever its ``/entry/definition`` says).
    """
    return (
        bool(data_links(handle))
        and DETECTOR + "/x_pixel_size" in handle
        and DETECTOR + "/y_pixel_size" in handle
        and not has_nxmx_detector_geometry(handle)
    )


@dataclasses.dataclass
class DectrisHeader:
    """What a DECTRIS master header says; None where it says nothing.

    Attributes
    ----------
    pixel_size_m : (float, float) or None
        x (fast) and y (slow) pixel size, metres.
    distance_m : float or None
        ``detector_distance``, metres (None when absent or zero).
    beam_centre_px : (float, float) or None
        ``beam_center_x``, ``beam_center_y``, pixels (fast, slow).
    wavelength_A : float or None
        ``/entry/instrument/beam/incident_wavelength``, else from
        ``photon_energy`` (eV), Å.
    sensor_material : str or None
    sensor_thickness_m : float or None
    count_time_s : float or None
        ``count_time``, else ``frame_time``, seconds.
    saturation_value : float or None
        ``saturation_value``, else ``countrate_correction_count_cutoff``:
        larger values are not counts.
    bit_depth : int or None
        ``bit_depth_image``, else ``bit_depth_readout``.
    pixel_mask : ndarray of uint32 or None
        DECTRIS ``pixel_mask`` (0 = good; bits for gap, dead, hot, noisy).
    image_size : (int, int) or None
        ``x_pixels_in_detector``, ``y_pixels_in_detector``.
    rotation : (str, float, float) or None
        (axis name, start in degrees, width in degrees) of a rotation sweep
        (``/entry/sample/goniometer/omega`` or ``phi`` advancing), None for stills.
    """

    pixel_size_m: tuple = None
    distance_m: float = None
    beam_centre_px: tuple = None
    wavelength_A: float = None
    sensor_material: str = None
    sensor_thickness_m: float = None
    count_time_s: float = None
    saturation_value: float = None
    bit_depth: int = None
    pixel_mask: np.ndarray = None
    image_size: tuple = None
    rotation: tuple = None


def _pixel_mask(handle):
    for group in (SPECIFIC, DETECTOR):
        mask = handle.get(f"{group}/pixel_mask")
        if isinstance(mask, h5py.Dataset):
            return np.asarray(mask[()])
    return None


def _rotation(handle):
    for axis in ("omega", "phi"):
        start = handle.get(f"{GONIOMETER}/{axis}")
        width = scalar(handle, f"{GONIOMETER}/{axis}_increment")
        if width is None:
            width = scalar(handle, f"{GONIOMETER}/{axis}_range_average")
        if isinstance(start, h5py.Dataset) and width:
            return axis, float(np.ravel(start[()])[0]), float(width)
    return None


def read_header(handle):
    """The DectrisHeader of an open master file (h5py.File)."""
    x_size = scalar(handle, DETECTOR + "/x_pixel_size")
    y_size = scalar(handle, DETECTOR + "/y_pixel_size")
    centre = (
        scalar(handle, DETECTOR + "/beam_center_x"),
        scalar(handle, DETECTOR + "/beam_center_y"),
    )
    wavelength = scalar(handle, "/entry/instrument/beam/incident_wavelength")
    if not wavelength:
        energy = header_value(handle, "photon_energy")
        wavelength = HC_EV_ANGSTROM / energy if energy else None
    thickness = scalar(handle, DETECTOR + "/sensor_thickness")
    width = header_value(handle, "x_pixels_in_detector")
    height = header_value(handle, "y_pixels_in_detector")
    return DectrisHeader(
        pixel_size_m=(
            (float(x_size), float(y_size)) if None not in (x_size, y_size) else None
        ),
        distance_m=float(scalar(handle, DETECTOR + "/detector_distance") or 0) or None,
        beam_centre_px=(
            (float(centre[0]), float(centre[1])) if None not in centre else None
        ),
        wavelength_A=float(wavelength) if wavelength else None,
        sensor_material=scalar(handle, DETECTOR + "/sensor_material") or None,
        sensor_thickness_m=float(thickness) if thickness else None,
        count_time_s=header_value(handle, "count_time", "frame_time"),
        saturation_value=header_value(
            handle, "saturation_value", "countrate_correction_count_cutoff"
        ),
        bit_depth=header_value(handle, "bit_depth_image", "bit_depth_readout"),
        pixel_mask=_pixel_mask(handle),
        image_size=(int(width), int(height)) if width and height else None,
        rotation=_rotation(handle),
    )
