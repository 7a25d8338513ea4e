"""dxtbx Format class for SACLA DataConvert HDF5 files (one still per tag).

dxtbx ships `FormatHDF5Sacla` for the same layout, but it reads data with
h5py's `Dataset.value`, which h5py 3 removed. This class is registered as a
child of both `FormatHDF5Sacla` and `FormatHDF5` (see setup.py): dxtbx's
registry prefers an understanding child over its parent, so every file that
`FormatHDF5Sacla` claims comes to this class; where a dxtbx has no
`FormatHDF5Sacla`, this class is found directly under `FormatHDF5`.

Models
------
- Beam: along -z, at each shot's photon energy where the file records one
  per tag (an `event_info` dataset named ...photon_energy...), else the
  run's (`run_info/sacla_config/photon_energy_in_eV`).
- Detector: one flat panel normal to the beam, fast axis +x, slow axis -y,
  pixel size from `detector_info/pixel_size_in_micro_meter`. Distance and
  beam centre from `detector_info/distance_in_mm` and
  `detector_info/beam_center_in_pixel` (fast, slow px) where the file has
  them; otherwise 100 mm and the centre of the image, with one warning at
  import (`dials_diffuse.format.placeholders`), to be overridden there:
  ``dials.import run.h5 distance=53 fast_slow_beam_centre=1201.5,1210.2``.
- Images: `detector_data` of each tag in acquisition order, as float64;
  pixels flagged by the tag's `detector_status` (or not finite) read as
  -2e6, below the trusted range, so DIALS masks them.
"""

from dxtbx.format.Format import Format
from dxtbx.format.FormatHDF5 import FormatHDF5
from dxtbx.format.FormatStill import FormatStill
from dxtbx.model import Beam
from scitbx import matrix
from scitbx.array_family import flex

from dials_diffuse.format.placeholders import Placeholder, report
from dials_diffuse.images.sacla import SACLASource, is_sacla_file

DEFAULT_DISTANCE_MM = 100.0
TRUSTED_RANGE = (-1.0e6, 1.0e9)
UNTRUSTED_VALUE = -2.0e6


class FormatSACLA(FormatHDF5, FormatStill):
    """SACLA DataConvert (``-reconst``) HDF5: one assembled still image per tag."""

    @staticmethod
    def understand(image_file):
        return is_sacla_file(image_file)

    def _start(self):
        self._source = SACLASource(self.get_image_file())
        self._placeholders = []

    def _placeholder(self, what, value, parameter, still_in_use):
        self._placeholders.append(
            Placeholder(self.get_image_file(), what, value, parameter, still_in_use)
        )

    def _detector(self, index=None):
        source = self._source
        pixel_size = source.pixel_size_mm
        slow_size, fast_size = source.panel_shapes[0]
        distance = source.distance_mm
        if not distance:
            distance = DEFAULT_DISTANCE_MM
            self._placeholder(
                "detector_info/distance_in_mm",
                f"{DEFAULT_DISTANCE_MM} mm",
                "distance",
                lambda: (
                    abs(self._detector_instance[0].get_distance() - distance) < 1e-9
                ),
            )
        if source.beam_centre_px is not None:
            centre_fast, centre_slow = source.beam_centre_px
        else:
            centre_fast, centre_slow = fast_size / 2.0, slow_size / 2.0

            def centre_unchanged():
                beam = Beam((0.0, 0.0, 1.0), self._source.wavelength)
                now = self._detector_instance[0].get_beam_centre_px(beam.get_s0())
                return abs(now[0] - centre_fast) + abs(now[1] - centre_slow) < 1e-6

            self._placeholder(
                "detector_info/beam_center_in_pixel",
                "the image centre",
                "fast_slow_beam_centre",
                centre_unchanged,
            )
        fast = matrix.col((1.0, 0.0, 0.0))
        slow = matrix.col((0.0, -1.0, 0.0))
        origin = matrix.col(
            (
                -centre_fast * pixel_size[0],
                centre_slow * pixel_size[1],
                -distance,
            )
        )
        return self._detector_factory.make_detector(
            "PAD",
            fast,
            slow,
            origin,
            pixel_size,
            (fast_size, slow_size),
            TRUSTED_RANGE,
        )

    def _beam(self, index=None):
        return Beam((0.0, 0.0, 1.0), self._source.wavelength)

    def get_num_images(self):
        return self._source.n_frames

    def get_raw_data(self, index=0):
        data, valid = self._source.read_shot(index)
        data = data.astype("float64")
        # Pixels the file marks bad (detector_status, non-finite values) fall
        # below the trusted range, so that the DIALS mask leaves them out.
        data[~valid] = UNTRUSTED_VALUE
        return flex.double(data)

    def get_image_file(self, index=None):
        return Format.get_image_file(self)

    def get_detector(self, index=None):
        """The detector (dxtbx asks for it at import: placeholders are
        reported then, never when an .expt is loaded)."""
        self._report_placeholders()
        return self._detector_instance

    def _report_placeholders(self):
        placeholders, self._placeholders = self._placeholders, []
        report(placeholders)

    def get_beam(self, index=None):
        if index is None:
            return self._beam_instance
        return Beam((0.0, 0.0, 1.0), float(self._source.wavelengths[index]))

    def get_tag(self, index):
        """The SACLA tag of image `index` (0-based)."""
        return int(self._source.tags[index])
