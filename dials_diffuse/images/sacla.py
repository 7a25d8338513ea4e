"""SACLA DataConvert HDF5 files: still shots by tag, streamed.

The layout written by SACLA's DataConvert with image reconstruction
(``-reconst``), one run per file::

    /file_info/run_number_list                      [run]
    /run_N/event_info/tag_number_list               tags, in acquisition order
    /run_N/event_info/<...shutter...>/status        optional, 0 = shutter closed
    /run_N/event_info/<...>/photon_energy_in_eV      optional, one per tag
    /run_N/run_info/sacla_config/photon_energy_in_eV nominal, for the run
    /run_N/detector_2d_assembled_1/detector_info/pixel_size_in_micro_meter
    /run_N/detector_2d_assembled_1/tag_T/detector_data    (slow, fast) image
    /run_N/detector_2d_assembled_1/tag_T/detector_status  optional

Two optional datasets in ``detector_info`` carry geometry that DataConvert
does not write but simulators and converted files may: ``distance_in_mm``
and ``beam_center_in_pixel`` (fast, slow, pixel units, pixel centres at
i+0.5). Where they are absent, ``dials.import distance=...
fast_slow_beam_centre=...`` sets them.

The photon energy of each shot comes from an ``event_info`` dataset with
"photon_energy" in its path and one value per tag (e.g.
``event_info/bl_3/oh_2/photon_energy_in_eV``) where there is one, else the
run's nominal energy. Dark shots are those whose shutter status (any
``event_info`` dataset with "shutter" in its path and one value per tag) is
0; files without a shutter record flag none (see polar_transform's dark
detection). A per-tag
``detector_status`` with the image's shape marks bad pixels (non-zero) for
that shot; a scalar non-zero status marks the whole shot invalid.
"""

import threading

import h5py
import numpy as np

from dials_diffuse.images.source import ImageSource, exclude_non_finite, output_buffer
from dials_diffuse.util.errors import DataError

# h c in eV Å (CODATA 2018), as cctbx's factor_ev_angstrom.
EV_ANGSTROM = 12398.419843320026
DETECTOR_GROUP = "detector_2d_assembled_1"


def sacla_run_group(handle):
    """The name of the run group of an open SACLA file, or None if not SACLA."""
    try:
        runs = handle["file_info/run_number_list"][()]
        run = f"run_{int(np.ravel(runs)[0])}"
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if run in handle and DETECTOR_GROUP in handle[run]:
        return run
    return None


def is_sacla_file(path):
    """True when `path` is an HDF5 file in the SACLA DataConvert layout."""
    try:
        with h5py.File(path, "r") as handle:
            return sacla_run_group(handle) is not None
    except OSError:
        return False


def _tag_number(name):
    try:
        return int(name[len("tag_") :]) if name.startswith("tag_") else None
    except ValueError:
        return None


class SACLASource(ImageSource):
    """Still shots of one SACLA run, one frame per tag, read shot by shot.

    Parameters
    ----------
    path : str or Path
        The DataConvert HDF5 file.

    Attributes
    ----------
    tags : ndarray of int64
        Tag of each shot, in acquisition order.
    dark : ndarray of bool
        True for shutter-closed (dark) shots.
    photon_energy_ev : float
        Nominal photon energy of the run in eV.
    wavelength : float
        Nominal wavelength in Å.
    wavelengths : ndarray of float
        Wavelength of each shot in Å (per-tag energies where recorded).
    pixel_size_mm : (float, float)
        Pixel size (fast, slow) in mm.
    distance_mm : float or None
        Sample-detector distance in mm, when the file has it.
    beam_centre_px : (float, float) or None
        Beam centre (fast, slow) in pixels, when the file has it.
    """

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._handle = None
        try:
            handle = h5py.File(self.path, "r")
        except OSError as error:
            raise DataError(
                f"{self.path}: not a readable HDF5 file ({error})"
            ) from error
        self._handle = handle
        run_name = sacla_run_group(handle)
        if run_name is None:
            self.close()
            raise DataError(f"{self.path}: not a SACLA DataConvert file")
        self.run_number = int(run_name[len("run_") :])
        run = handle[run_name]
        self._detector = run[DETECTOR_GROUP]
        try:
            self.tags = self._read_tags(run)
            self.photon_energy_ev = float(
                np.ravel(run["run_info/sacla_config/photon_energy_in_eV"][()])[0]
            )
            info = self._detector["detector_info"]
            pixel_um = np.ravel(info["pixel_size_in_micro_meter"][()]).astype(float)
            self.distance_mm = (
                float(np.ravel(info["distance_in_mm"][()])[0])
                if "distance_in_mm" in info
                else None
            )
            self.beam_centre_px = (
                tuple(float(v) for v in np.ravel(info["beam_center_in_pixel"][()])[:2])
                if "beam_center_in_pixel" in info
                else None
            )
        except (KeyError, ValueError, IndexError, TypeError) as error:
            self.close()
            raise DataError(
                f"{self.path}: incomplete SACLA metadata ({error})"
            ) from error
        if len(self.tags) == 0:
            self.close()
            raise DataError(f"{self.path}: run {self.run_number} has no shots")
        if not self.photon_energy_ev > 0:
            self.close()
            raise DataError(
                f"{self.path}: photon energy {self.photon_energy_ev} eV is not positive"
            )
        self.wavelength = EV_ANGSTROM / self.photon_energy_ev
        self.pixel_size_mm = (pixel_um[0] / 1000.0, pixel_um[-1] / 1000.0)
        first = self._dataset(0)
        if first.ndim != 2:
            self.close()
            raise DataError(
                f"{self.path}: tag_{self.tags[0]}/detector_data is not a 2-d image"
            )
        self._shape = tuple(first.shape)
        self._dtype = np.dtype(first.dtype)
        listed = self._listed_tags(run)
        status = self._per_tag_record(run, "shutter", listed)
        self.dark = (
            np.zeros(len(self.tags), dtype=bool) if status is None else status == 0
        )
        energies = self._per_tag_record(run, "photon_energy", listed)
        if energies is None or not np.all(energies > 0):
            energies = np.full(len(self.tags), self.photon_energy_ev)
        self.wavelengths = EV_ANGSTROM / energies.astype(np.float64)

    # -- metadata -----------------------------------------------------------

    def _read_tags(self, run):
        present = {
            _tag_number(name): name
            for name in self._detector
            if _tag_number(name) is not None
        }
        if "event_info/tag_number_list" in run:
            listed = [int(t) for t in np.ravel(run["event_info/tag_number_list"][()])]
            # The run's tag list covers every exposure; a subset file holds a part.
            tags = [t for t in listed if t in present]
            if tags:
                return np.array(tags, dtype=np.int64)
        return np.array(sorted(present), dtype=np.int64)

    def _listed_tags(self, run):
        if "event_info/tag_number_list" in run:
            return np.ravel(run["event_info/tag_number_list"][()]).astype(np.int64)
        return self.tags

    def _per_tag_record(self, run, word, listed):
        """Values for our shots of the first event_info dataset whose path
        contains `word` and that holds one value per listed tag, or None."""
        if "event_info" not in run:
            return None
        found = []
        run["event_info"].visititems(
            lambda name, obj: (
                found.append(obj)
                if isinstance(obj, h5py.Dataset)
                and word in name.lower()
                and obj.ndim == 1
                and obj.shape[0] == len(listed)
                else None
            )
        )
        if not found:
            return None
        values = np.asarray(found[0][()])
        position = {int(t): i for i, t in enumerate(listed)}
        return values[[position[int(tag)] for tag in self.tags]]

    def _dataset(self, index):
        name = f"tag_{self.tags[index]}/detector_data"
        try:
            return self._detector[name]
        except KeyError as error:
            raise DataError(f"{self.path}: {name} is missing") from error

    # -- ImageSource --------------------------------------------------------

    @property
    def n_frames(self):
        return len(self.tags)

    @property
    def panel_shapes(self):
        return [self._shape]

    @property
    def dtype(self):
        return self._dtype

    def static_mask(self, panel=0):
        """Every pixel valid: DataConvert files carry no pixel mask."""
        return np.ones(self._shape, dtype=bool)

    def read_shot(self, index):
        """Image (slow, fast) and validity mask of shot `index` (0-based)."""
        data, valid = self.read_shots(index, index + 1)
        return data[0], valid[0]

    def read_shots(self, start, stop, out=None):
        """Images and validity masks of shots start..stop-1.

        Pixels that are not finite, or flagged by a per-pixel
        `detector_status`, are invalid; a shot with a non-zero scalar
        status is invalid as a whole.
        """
        n = stop - start
        data = out if out is not None else np.empty((n,) + self._shape, self._dtype)
        valid = np.ones((n,) + self._shape, dtype=bool)
        with self._lock:
            for i in range(n):
                dataset = self._dataset(start + i)
                if dataset.shape != self._shape:
                    raise DataError(
                        f"{self.path}: tag_{self.tags[start + i]} image has shape "
                        f"{dataset.shape}, not {self._shape}"
                    )
                try:
                    dataset.read_direct(data, dest_sel=np.s_[i])
                except (OSError, TypeError) as error:
                    raise DataError(
                        f"{self.path}: cannot read tag_{self.tags[start + i]} ({error})"
                    ) from error
                status_name = f"tag_{self.tags[start + i]}/detector_status"
                if status_name in self._detector:
                    status = np.asarray(self._detector[status_name][()])
                    if status.shape == self._shape:
                        valid[i] &= status == 0
                    elif status.size == 1 and status.ravel()[0] != 0:
                        valid[i] = False
        exclude_non_finite(data, valid, self.path)
        return data, valid

    def read(self, chunk, out=None):
        data, valid = self.read_shots(chunk.frames.start, chunk.frames.stop)
        index = np.s_[:, chunk.rows, chunk.columns]
        tile = data[index]
        out = output_buffer(tile.shape, self.dtype, out)
        out[...] = tile
        return out, np.ascontiguousarray(valid[index])

    def close(self):
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
