"""dxtbx Format class for DECTRIS filewriter master files that dxtbx does not read.

The DECTRIS filewriter (SIMPLON API) writes a master file ``*_master.h5``
whose ``/entry/data/data_NNNNNN`` are external links to the data files, and
whose detector header is flat: ``x_pixel_size``, ``beam_center_x``,
``detector_distance``, ``sensor_material``, ``detectorSpecific/pixel_mask``...
dxtbx reads such files only when they carry the full NeXus geometry
(``FormatNXmx``) or DECTRIS' ``geometry`` group and ``NX_class`` attributes
(``FormatHDF5EigerNearlyNexus``). This class reads the rest: master files
with only the flat header (as the SIMPLON filewriter writes with
``nexus`` geometry off, or as files are cut down and rewritten), with or
without a ``pixel_mask``. Files dxtbx reads itself are left to dxtbx.

Models, from the header (dxtbx's standard frame: beam along -z, detector
fast axis +x, slow axis -y, rotation axis +x):

- beam: ``/entry/instrument/beam/incident_wavelength`` (Å), else
  ``detectorSpecific/photon_energy`` (eV);
- detector: ``detector_distance`` (m), ``beam_center_x/y`` (px),
  ``x/y_pixel_size`` (m), parallax correction from ``sensor_material`` and
  ``sensor_thickness`` (m); trusted range up to the count-rate cutoff
  (``countrate_correction_count_cutoff`` or ``saturation_value``, else the
  largest value of the data type) as dxtbx does for NXmx;
- a sweep when ``/entry/sample/goniometer/omega`` (or ``phi``) advances
  (``*_increment`` or ``*_range_average`` nonzero), with exposure
  ``count_time`` (s); stills otherwise;
- static mask: ``detectorSpecific/pixel_mask`` (nonzero = bad) and the
  module gaps of the known EIGER sizes. Gap and overload values (2^n - 1)
  fall outside the trusted range and so are masked, never used.

Missing distance, beam centre or wavelength get placeholder values (100 mm,
the detector centre, 1 Å) and a warning: give the true ones to
``dials.import`` (``distance=``, ``fast_slow_beam_centre=``, ``wavelength=``).
"""

import logging
import re
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)
import numpy as np
from cctbx.eltbx import attenuation_coefficient
from dxtbx import flumpy
from dxtbx.format.FormatHDF5 import FormatHDF5
from dxtbx.format.FormatPilatusHelpers import determine_eiger_mask
from dxtbx.model import ParallaxCorrectedPxMmStrategy

from dials_diffuse.util.compat import trusted_range_between

logger = logging.getLogger(__name__)

DETECTOR = "/entry/instrument/detector"
SPECIFIC = DETECTOR + "/detectorSpecific"
GONIOMETER = "/entry/sample/goniometer"
DATA_LINK = re.compile(r"data_\d{6}$")
#: ħc in eV·Å, to convert photon energy to wavelength.
HC_EV_ANGSTROM = 12398.419843320026

#: Placeholders when the header lacks a value (the user overrides them at import).
DEFAULT_DISTANCE_MM = 100.0
DEFAULT_WAVELENGTH = 1.0


def _value(handle, path, default=None):
    """A scalar from the file (bytes decoded), or default when absent."""
    if path not in handle:
        return default
    value = handle[path][()]
    if isinstance(value, bytes):
        return value.decode().strip()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    return value


def _dxtbx_reads(handle):
    """True when dxtbx's own NXmx or 'nearly NeXus' Eiger class reads this file."""
    entry = handle.get("/entry")
    if entry is None:
        return False
    if "definition" in entry:
        return True  # NXmx: FormatNXmx's domain
    nx_class = entry.attrs.get("NX_class", b"")
    nx_class = nx_class.decode() if isinstance(nx_class, bytes) else str(nx_class)
    description = str(_value(handle, DETECTOR + "/description", "")).lower()
    required = (
        DETECTOR + "/geometry/orientation/value",
        DETECTOR + "/geometry/translation/distances",
        DETECTOR + "/detector_number",
        "/entry/instrument/beam",
    )
    cutoff = any(
        path in handle
        for path in (
            SPECIFIC + "/countrate_correction_count_cutoff",
            SPECIFIC + "/detectorModule_000/countrate_correction_count_cutoff",
        )
    )
    return (
        nx_class == "NXentry"
        and "dectris eiger" in description
        and cutoff
        and all(path in handle for path in required)
        and _dxtbx_knows_module_layout(handle)
    )


# Sensor materials as headers spell them, to the formula cctbx's tables know.
SENSOR_SYMBOLS = {"silicon": "Si", "si": "Si", "cdte": "CdTe", "gaas": "GaAs"}


def _sensor_symbol(material):
    """'Si', 'Silicon', 'CdTe' ... as the chemical formula; None if absent."""
    if not material:
        return None
    return SENSOR_SYMBOLS.get(str(material).strip().lower(), str(material).strip())


def _dxtbx_knows_module_layout(handle):
    """True when dxtbx's Eiger gap mask accepts the image size.

    dxtbx's 'nearly NeXus' class claims every such file but fails on image
    sizes that are not a whole number of EIGER modules (an error inside
    dxtbx, not a message); those files are ours.
    """
    from dxtbx.format.FormatPilatusHelpers import determine_eiger_mask
    from dxtbx.model import Detector

    width = _value(handle, SPECIFIC + "/x_pixels_in_detector")
    height = _value(handle, SPECIFIC + "/y_pixels_in_detector")
    if not (width and height):
        return False
    detector = Detector()
    panel = detector.add_panel()
    panel.set_type("SENSOR_PAD")
    panel.set_image_size((int(width), int(height)))
    try:
        determine_eiger_mask(detector)
    except Exception:
        return False
    return True


def _data_links(handle):
    """Names of the /entry/data/data_NNNNNN entries, in order."""
    group = handle.get("/entry/data")
    if not isinstance(group, h5py.Group):
        return []
    return sorted(name for name in group if DATA_LINK.match(name))


class FormatEigerFilewriter(FormatHDF5):
    """DECTRIS filewriter master files without full NeXus geometry (see module doc)."""

    @staticmethod
    def understand(image_file):
        try:
            with h5py.File(image_file, "r") as handle:
                return (
                    bool(_data_links(handle))
                    and DETECTOR + "/x_pixel_size" in handle
                    and DETECTOR + "/y_pixel_size" in handle
                    and not _dxtbx_reads(handle)
                )
        except (OSError, KeyError, ValueError):
            return False

    def _start(self):
        self._handle = h5py.File(self._image_file, "r")
        self._datasets = []  # (first frame, dataset)
        first = 0
        for name in _data_links(self._handle):
            try:
                dataset = self._handle["/entry/data"][name]
            except KeyError:
                continue  # links to files that were never written (fewer images)
            self._datasets.append((first, dataset))
            first += dataset.shape[0]
        if not self._datasets:
            raise OSError(f"{self._image_file}: no readable /entry/data/data_NNNNNN")
        self._num_images = first
        self._data_dtype = self._datasets[0][1].dtype
        self._beam_model = self._make_beam()
        self._detector_model = self._make_detector()
        self._goniometer_model, self._scan_model = self._make_sweep()
        self._static_mask = self._make_static_mask()

    def _warn_missing(self, what, placeholder, parameter):
        logger.warning(
            f"{Path(self._image_file).name}: no {what} in the header; using "
            f"{placeholder} (set the true value with dials.import {parameter}=)"
        )

    def _make_beam(self):
        wavelength = _value(self._handle, "/entry/instrument/beam/incident_wavelength")
        if not wavelength:
            energy = _value(self._handle, SPECIFIC + "/photon_energy")
            wavelength = HC_EV_ANGSTROM / energy if energy else None
        if not wavelength:
            self._warn_missing("wavelength", f"{DEFAULT_WAVELENGTH} Å", "wavelength")
            wavelength = DEFAULT_WAVELENGTH
        return self._beam_factory.simple(float(wavelength))

    def _make_detector(self):
        h = self._handle
        n_slow, n_fast = self._datasets[0][1].shape[1:]
        pixel_size = (
            1000 * float(_value(h, DETECTOR + "/x_pixel_size")),
            1000 * float(_value(h, DETECTOR + "/y_pixel_size")),
        )
        distance = _value(h, DETECTOR + "/detector_distance")
        if distance:
            distance = 1000 * float(distance)
        else:
            self._warn_missing(
                "detector_distance", f"{DEFAULT_DISTANCE_MM} mm", "distance"
            )
            distance = DEFAULT_DISTANCE_MM
        centre_px = (
            _value(h, DETECTOR + "/beam_center_x"),
            _value(h, DETECTOR + "/beam_center_y"),
        )
        if None in centre_px:
            centre_px = (n_fast / 2, n_slow / 2)
            self._warn_missing(
                "beam centre", "the detector centre", "fast_slow_beam_centre"
            )
        beam_centre = (centre_px[0] * pixel_size[0], centre_px[1] * pixel_size[1])

        cutoff = _value(h, SPECIFIC + "/countrate_correction_count_cutoff")
        if cutoff is None:
            cutoff = _value(h, DETECTOR + "/saturation_value")
        if cutoff is None:
            cutoff = (
                np.iinfo(self._data_dtype).max
                if self._data_dtype.kind in "ui"
                else 1e300
            )
        trusted_range = trusted_range_between(-1, float(cutoff))

        material = _sensor_symbol(_value(h, DETECTOR + "/sensor_material"))
        thickness = _value(h, DETECTOR + "/sensor_thickness")
        px_mm, mu = None, 0.0
        if material and thickness:
            table = attenuation_coefficient.get_table(material)
            mu = table.mu_at_angstrom(self._beam_model.get_wavelength()) / 10.0
            px_mm = ParallaxCorrectedPxMmStrategy(mu, 1000 * float(thickness))
        detector = self._detector_factory.simple(
            "PAD",
            distance,
            beam_centre,
            "+x",
            "-y",
            pixel_size,
            (n_fast, n_slow),
            trusted_range,
            [],
            px_mm=px_mm,
            mu=mu,
        )
        panel = detector[0]
        if px_mm is not None:
            panel.set_material(material)
            panel.set_thickness(1000 * float(thickness))
        try:
            for f0, f1, s0, s1 in determine_eiger_mask(detector):
                panel.add_mask(f0 - 1, s0 - 1, f1, s1)
        except (AttributeError, AssertionError):
            pass  # not one of the known EIGER module layouts
        return detector

    def _make_sweep(self):
        """(goniometer, scan) for a rotation sweep, or (None, None) for stills."""
        h = self._handle
        exposure = _value(h, DETECTOR + "/count_time") or _value(
            h, DETECTOR + "/frame_time"
        )
        exposure = float(exposure) if exposure else 0.0
        for axis in ("omega", "phi"):
            start = h.get(f"{GONIOMETER}/{axis}")
            width = _value(h, f"{GONIOMETER}/{axis}_increment")
            if width is None:
                width = _value(h, f"{GONIOMETER}/{axis}_range_average")
            if start is None or not width:
                continue
            first = float(np.ravel(start[()])[0])
            goniometer = self._goniometer_factory.known_axis((1, 0, 0))
            scan = self._scan_factory.make_scan(
                (1, self._num_images),
                exposure,
                (first, float(width)),
                list(range(self._num_images)),
                deg=True,
            )
            return goniometer, scan
        return None, None

    def _make_static_mask(self):
        mask = self._handle.get(SPECIFIC + "/pixel_mask")
        if mask is None:
            return None
        mask = np.asarray(mask[()])
        expected = tuple(self._detector_model[0].get_image_size()[::-1])
        if mask.shape != expected:
            logger.warning(
                f"{Path(self._image_file).name}: pixel_mask shape {mask.shape} is not "
                f"the image shape {expected}; ignored"
            )
            return None
        return (flumpy.from_numpy(np.ascontiguousarray(mask == 0)),)

    def get_num_images(self):
        return self._num_images

    def _goniometer(self):
        return self._goniometer_model

    def _detector(self):
        return self._detector_model

    def _beam(self):
        return self._beam_model

    def _scan(self):
        return self._scan_model

    def get_scan(self, index=None):
        if index is None or self._scan_model is None:
            return self._scan_model
        return self._scan_model[index]

    def get_static_mask(self, index=None, goniometer=None):
        return self._static_mask

    def get_image_file(self, index=None):
        return self._image_file

    def get_raw_data(self, index):
        """Frame `index` (0-based) as flex.int, as dxtbx reads NXmx integer data."""
        for first, dataset in reversed(self._datasets):
            if index >= first:
                frame = dataset[index - first]
                break
        if frame.dtype.kind in "ui":
            frame = frame.astype(np.int32, copy=False)  # uint32 2^32 - 1 -> -1 (masked)
        else:
            frame = frame.astype(np.float64, copy=False)
        return flumpy.from_numpy(np.ascontiguousarray(frame))
