"""dxtbx Format class for DECTRIS filewriter master files without NXmx geometry.

The DECTRIS filewriter (SIMPLON API) writes a master file ``*_master.h5``
whose ``/entry/data/data_NNNNNN`` are external links to the data files, and
whose detector header is flat: ``x_pixel_size``, ``beam_center_x``,
``detector_distance``, ``sensor_material``, ``detectorSpecific/pixel_mask``...
dxtbx reads such files when they place the detector by NXmx transformations
(``FormatNXmx``). This class claims, by a positive marker as dxtbx's own
Eiger classes do (`dials_diffuse.io.dectris_master.is_flat_dectris_master`),
the DECTRIS masters whose geometry is the flat header only: as the
filewriter writes with NeXus geometry off, as files are cut down and
rewritten, and masters that say ``/entry/definition = NXmx`` without NXmx
geometry (dxtbx's ``FormatNXmx`` takes those, finds no detector and every
later program fails). Being first among ``FormatHDF5``'s children, it is
asked before dxtbx's classes. Masters with DECTRIS' own ``geometry`` group
are left to dxtbx's ``FormatHDF5EigerNearlyNexus``, except where dxtbx's
EIGER gap layout does not fit the image size (it fails inside dxtbx there).

Models, from the header (`dials_diffuse.io.dectris_master.read_header`;
dxtbx's standard frame: beam along -z, detector fast axis +x, slow axis -y,
rotation axis +x):

- beam: ``/entry/instrument/beam/incident_wavelength`` (Å), else
  ``detectorSpecific/photon_energy`` (eV);
- detector: ``detector_distance`` (m), ``beam_center_x/y`` (px),
  ``x/y_pixel_size`` (m), parallax correction from ``sensor_material`` and
  ``sensor_thickness`` (m); trusted range up to the saturation value
  (``saturation_value`` or ``countrate_correction_count_cutoff``, else the
  largest value of the data type) as dxtbx does for NXmx;
- a sweep when ``/entry/sample/goniometer/omega`` (or ``phi``) advances
  (``*_increment`` or ``*_range_average`` nonzero), with exposure
  ``count_time`` (s); stills otherwise;
- static mask: ``pixel_mask`` (nonzero = bad) and the module gaps of the
  known EIGER sizes. Gap and overload values (2^n - 1) fall outside the
  trusted range and so are masked, never used.

Missing distance, beam centre or wavelength get placeholder values (100 mm,
the detector centre, 1 Å) and one warning, at import
(`dials_diffuse.format.placeholders`): give the true ones to
``dials.import`` (``distance=``, ``fast_slow_beam_centre=``, ``wavelength=``).
"""

import logging
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)
import numpy as np
from cctbx.eltbx import attenuation_coefficient
from dxtbx import flumpy
from dxtbx.format.FormatHDF5 import FormatHDF5
from dxtbx.format.FormatPilatusHelpers import determine_eiger_mask
from dxtbx.model import Detector, ParallaxCorrectedPxMmStrategy

from dials_diffuse.format.placeholders import Placeholder, report
from dials_diffuse.io.dectris_master import (
    DETECTOR,
    data_links,
    is_flat_dectris_master,
    read_header,
)
from dials_diffuse.util.compat import trusted_range_between

logger = logging.getLogger(__name__)

#: Placeholders when the header lacks a value (the user overrides them at import).
DEFAULT_DISTANCE_MM = 100.0
DEFAULT_WAVELENGTH = 1.0

# Sensor materials as headers spell them, to the formula cctbx's tables know.
SENSOR_SYMBOLS = {"silicon": "Si", "si": "Si", "cdte": "CdTe", "gaas": "GaAs"}


def _sensor_symbol(material):
    """'Si', 'Silicon', 'CdTe' ... as the chemical formula; None if absent."""
    if not material:
        return None
    return SENSOR_SYMBOLS.get(str(material).strip().lower(), str(material).strip())


def _eiger_gaps(image_size):
    """dxtbx's EIGER module gaps (f0, f1, s0, s1, 1-based) for an image size
    (fast, slow), or None when it is not a whole number of EIGER modules."""
    detector = Detector()
    panel = detector.add_panel()
    panel.set_type("SENSOR_PAD")
    panel.set_image_size(tuple(int(n) for n in image_size))
    try:
        return determine_eiger_mask(detector)
    except Exception:
        return None


def _ours(handle):
    """True for a flat-header DECTRIS master that dxtbx cannot read itself."""
    if not is_flat_dectris_master(handle):
        return False
    if DETECTOR + "/geometry" not in handle:
        return True
    header = read_header(handle)
    return header.image_size is None or _eiger_gaps(header.image_size) is None


class FormatEigerFilewriter(FormatHDF5):
    """DECTRIS filewriter master files without NXmx geometry (see module doc)."""

    @staticmethod
    def understand(image_file):
        try:
            with h5py.File(image_file, "r") as handle:
                return _ours(handle)
        except (OSError, KeyError, ValueError):
            return False

    def _start(self):
        self._handle = h5py.File(self._image_file, "r")
        self._header = read_header(self._handle)
        self._placeholders = []
        self._datasets = []  # (first frame, dataset)
        first = 0
        for name in data_links(self._handle):
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

    def _placeholder(self, what, value, parameter, still_in_use):
        self._placeholders.append(
            Placeholder(str(self._image_file), what, value, parameter, still_in_use)
        )

    def _make_beam(self):
        wavelength = self._header.wavelength_A
        if not wavelength:
            wavelength = DEFAULT_WAVELENGTH
            self._placeholder(
                "wavelength",
                f"{DEFAULT_WAVELENGTH} Å",
                "wavelength",
                lambda: self._beam_model.get_wavelength() == DEFAULT_WAVELENGTH,
            )
        return self._beam_factory.simple(float(wavelength))

    def _make_detector(self):
        header = self._header
        n_slow, n_fast = self._datasets[0][1].shape[1:]
        pixel_size = tuple(1000 * size for size in header.pixel_size_m)
        if header.distance_m:
            distance = 1000 * header.distance_m
        else:
            distance = DEFAULT_DISTANCE_MM
            self._placeholder(
                "detector_distance",
                f"{DEFAULT_DISTANCE_MM} mm",
                "distance",
                lambda: abs(self._detector_model[0].get_distance() - distance) < 1e-9,
            )
        centre_px = header.beam_centre_px
        if centre_px is None:
            centre_px = (n_fast / 2, n_slow / 2)

            def centre_unchanged():
                now = self._detector_model[0].get_beam_centre_px(
                    self._beam_model.get_s0()
                )
                return np.allclose(now, centre_px, atol=1e-6)

            self._placeholder(
                "beam centre",
                "the detector centre",
                "fast_slow_beam_centre",
                centre_unchanged,
            )
        beam_centre = (centre_px[0] * pixel_size[0], centre_px[1] * pixel_size[1])

        cutoff = header.saturation_value
        if cutoff is None:
            cutoff = (
                np.iinfo(self._data_dtype).max
                if self._data_dtype.kind in "ui"
                else 1e300
            )
        trusted_range = trusted_range_between(-1, float(cutoff))

        material = _sensor_symbol(header.sensor_material)
        thickness = header.sensor_thickness_m
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
        for f0, f1, s0, s1 in _eiger_gaps((n_fast, n_slow)) or []:
            panel.add_mask(f0 - 1, s0 - 1, f1, s1)
        return detector

    def _make_sweep(self):
        """(goniometer, scan) for a rotation sweep, or (None, None) for stills."""
        if self._header.rotation is None:
            return None, None
        _, first, width = self._header.rotation
        exposure = float(self._header.count_time_s or 0.0)
        goniometer = self._goniometer_factory.known_axis((1, 0, 0))
        scan = self._scan_factory.make_scan(
            (1, self._num_images),
            exposure,
            (first, width),
            list(range(self._num_images)),
            deg=True,
        )
        return goniometer, scan

    def _make_static_mask(self):
        mask = self._header.pixel_mask
        if mask is None:
            return None
        expected = tuple(self._detector_model[0].get_image_size()[::-1])
        if mask.shape != expected:
            logger.warning(
                f"{Path(self._image_file).name}: pixel_mask shape {mask.shape} is not "
                f"the image shape {expected}; ignored"
            )
            return None
        return (flumpy.from_numpy(np.ascontiguousarray(mask == 0)),)

    def get_detector(self, index=None):
        """The detector from the header (dxtbx asks for it at import: the
        placeholders are reported then, never when an .expt is loaded)."""
        self._report_placeholders()
        return super().get_detector(index)

    def get_beam(self, index=None):
        """The beam from the header (see get_detector)."""
        self._report_placeholders()
        return super().get_beam(index)

    def _report_placeholders(self):
        placeholders, self._placeholders = self._placeholders, []
        report(placeholders)

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
