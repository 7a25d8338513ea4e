"""Write Eiger HDF5 files: a master file and data files, as real detectors do.

The one DECTRIS writer of the package (the simulator, the tests and the
benchmarks use it). Three flavours of master share it (`GEOMETRIES`):

- ``"nxmx"``: an NXmx master file (``/entry/definition = "NXmx"``) with the
  full geometry (beam, detector with its transformations and one
  ``NXdetector_module``, sample goniometer ``omega`` axis, ``pixel_mask``,
  ``count_time``/``frame_time``, ``saturation_value``), which DIALS's own
  ``FormatNXmx`` reads. ``/entry/data/data`` is a virtual dataset over all
  data files (the ``signal``), beside the DECTRIS-style links.
- ``"dectris"``: a DECTRIS "nearly NeXus" master as written by the EIGER
  file writer (no ``definition``; ``detectorSpecific`` metadata and the
  ``geometry`` group).
- ``"flat"``: the flat DECTRIS header only (no geometry group, no NXmx
  transformations), as the filewriter writes with NeXus geometry off; our
  ``FormatEigerFilewriter`` reads it.

`write_eiger_dataset` writes from dxtbx models (the simulator);
`write_dectris_files` from header values as a test or benchmark states them.
Header values named in ``omit`` are left out, to make the bare files real
detectors and rewritten files sometimes have. In every flavour the frames
live in data files ``<prefix>_data_00000N.h5`` (dataset ``/entry/data/data``,
attributes ``image_nr_low``/``image_nr_high``, 1-based, inclusive),
compressed with bitshuffle/LZ4 (HDF5 filter 32008) or another of
`COMPRESSION`, chunked one frame per chunk, and the master links them as
``/entry/data/data_00000N`` (HDF5 external links). Frames are written as they
come (a generator), so memory does not grow with the number of frames.

Geometry: NeXus uses McStas coordinates; dxtbx converts with
``diag(-1, 1, -1)``. A detector with fast +x, slow -y (dxtbx) has McStas
``fast_pixel_direction = (-1, 0, 0)`` and ``slow_pixel_direction = (0, -1, 0)``;
the beam centre at (bx, by) px puts the dxtbx origin at
``(-bx p, by p, -D)``, McStas ``(bx p, by p, D)``.
"""

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from dials_diffuse.io.dectris_master import HC_EV_ANGSTROM
from dials_diffuse.util.progress import progress

#: dxtbx panel material -> the sensor_material DECTRIS writes.
SENSOR_NAMES = {"Si": "Silicon", "CdTe": "CdTe", "GaAs": "GaAs"}

#: Master file flavours (module docstring).
GEOMETRIES = ("nxmx", "dectris", "flat")

#: Data file compressions: HDF5 filter keywords for h5py.
COMPRESSION = {
    "bslz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
    "lz4": lambda: hdf5plugin.LZ4(),
    "gzip": lambda: {"compression": "gzip", "compression_opts": 4},
    "none": lambda: {},
}

MCSTAS_FROM_IMGCIF = np.diag([-1.0, 1.0, -1.0])

# EIGER pixel_mask bits (DECTRIS): 0 gap, 1 dead, 2 under-responding,
# 3 over-responding (hot), 4 noisy. The values of bits 0 and 1:
GAP_BIT = 1
DEAD_BIT = 2


def _string(group, name, value, **attrs):
    dataset = group.create_dataset(name, data=np.bytes_(value))
    for key, val in attrs.items():
        dataset.attrs[key] = val
    return dataset


def _value(group, name, value, units=None, dtype=None):
    dataset = group.create_dataset(name, data=np.asarray(value, dtype=dtype))
    if units:
        dataset.attrs["units"] = np.bytes_(units)
    return dataset


def _group(parent, name, nx_class):
    group = parent.create_group(name)
    group.attrs["NX_class"] = np.bytes_(nx_class)
    return group


def _axis(group, name, value, vector, transformation_type, depends_on, units, **extra):
    dataset = _value(group, name, value, units=units, dtype="f8")
    dataset.attrs["vector"] = np.asarray(vector, dtype="f8")
    dataset.attrs["transformation_type"] = np.bytes_(transformation_type)
    dataset.attrs["depends_on"] = np.bytes_(depends_on)
    for key, val in extra.items():
        dataset.attrs[key] = val
    return dataset


def data_file_name(prefix, number):
    """``<prefix>_data_NNNNNN.h5`` for data file `number` (1-based)."""
    return f"{prefix}_data_{number:06d}.h5"


def write_data_files(
    directory,
    prefix,
    frames,
    *,
    n_frames,
    shape,
    dtype=np.uint16,
    frames_per_file=100,
    compression="bslz4",
    desc="Writing frames",
):
    """Stream `frames` (2-D arrays) into DECTRIS data files; return their names.

    Each file holds at most `frames_per_file` frames in ``/entry/data/data``,
    chunked one frame per chunk, with ``image_nr_low``/``image_nr_high``
    (1-based image numbers, inclusive). Memory holds one frame at a time.
    """
    directory = Path(directory)
    frames = iter(frames)
    names = []
    bar = progress(total=n_frames, desc=desc, unit="frame")
    for number, first in enumerate(range(0, n_frames, frames_per_file), start=1):
        count = min(frames_per_file, n_frames - first)
        name = data_file_name(prefix, number)
        with h5py.File(directory / name, "w") as handle:
            entry = handle.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            group = entry.create_group("data")
            group.attrs["NX_class"] = "NXdata"
            data = group.create_dataset(
                "data",
                shape=(count, *shape),
                chunks=(1, *shape),
                dtype=dtype,
                **COMPRESSION[compression](),
            )
            data.attrs["image_nr_low"] = np.int32(first + 1)
            data.attrs["image_nr_high"] = np.int32(first + count)
            for index in range(count):
                data[index] = next(frames)
                bar.update(1)
        names.append(name)
    bar.close()
    return names


#: Header values `write_master` can leave out (``omit=``): dataset paths
#: relative to /entry.
OPTIONAL_HEADER = {
    "description": "instrument/detector/description",
    "sensor_material": "instrument/detector/sensor_material",
    "sensor_thickness": "instrument/detector/sensor_thickness",
    "beam_center_x": "instrument/detector/beam_center_x",
    "beam_center_y": "instrument/detector/beam_center_y",
    "detector_distance": "instrument/detector/detector_distance",
    "incident_wavelength": "instrument/beam/incident_wavelength",
    "photon_energy": "instrument/detector/detectorSpecific/photon_energy",
    "countrate_correction_count_cutoff": (
        "instrument/detector/detectorSpecific/countrate_correction_count_cutoff"
    ),
    "saturation_value": "instrument/detector/saturation_value",
    "bit_depth_image": "instrument/detector/bit_depth_image",
}


def write_master(
    path,
    data_files,
    n_frames,
    shape,
    dtype,
    per_file,
    *,
    beam,
    detector,
    pixel_mask,
    exposure_s,
    scan=None,
    goniometer=None,
    geometry="nxmx",
    definition=None,
    transmission=None,
    omit=(),
    modules=None,
):
    """Write the master file that describes the data files.

    Parameters
    ----------
    path : Path
        Master file name (``<prefix>_master.h5``).
    data_files : list of str
        Data file names, relative to the master's directory.
    n_frames, shape, dtype, per_file
        Total frames, frame shape (ny, nx), pixel dtype, frames per file.
    beam, detector : dxtbx models
        Single-panel detector; beam along -z. The panel's upper trusted
        value is the saturation value (``countrate_correction_count_cutoff``,
        and ``saturation_value`` in NXmx), its material and thickness the
        sensor's.
    pixel_mask : ndarray of uint32, (ny, nx), or None
        EIGER pixel mask (0 = good; bit 0 = gap); None: no pixel_mask.
    exposure_s : float
        Count time and frame time (s).
    scan, goniometer : dxtbx models or None
        A rotation scan about the goniometer axis (omega), or None for a
        still series (omega fixed at 0).
    geometry : str
        One of GEOMETRIES (module docstring).
    definition : str, optional
        ``/entry/definition``; default "NXmx" for the nxmx flavour, none
        for the others.
    transmission : float or None
        Beam transmission (fraction, 0..1) in ``attenuator_transmission``.
    omit : iterable of str
        Keys of OPTIONAL_HEADER to leave out of the header.
    modules : list of (int, int, int, int), optional
        NXmx only: the image cut into detector modules (one
        ``NXdetector_module`` each, a panel each in DIALS), as (first row,
        first column, rows, columns) tiles of the frame; each module lies
        where its pixels lie on the flat `detector`. Rows or columns left
        out between tiles are gaps between modules. Default one module.
        The ``pixel_mask`` covers the whole frame, as on real multi-module
        detectors (each module's panel gets its tile of it; DIALS 3.12 reads
        it through `dials_diffuse.format.FormatNXmxModuleMask`).
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, not {geometry}")
    unknown = set(omit) - set(OPTIONAL_HEADER)
    if unknown:
        raise ValueError(f"cannot omit {sorted(unknown)}: not in OPTIONAL_HEADER")
    if definition is None and geometry == "nxmx":
        definition = "NXmx"
    nxmx = geometry == "nxmx"
    panel = detector[0]
    ny, nx = shape
    pixel_mm = panel.get_pixel_size()[0]
    beam_x, beam_y = panel.get_beam_centre_px(beam.get_s0())
    distance_mm = panel.get_distance()
    wavelength = beam.get_wavelength()
    with h5py.File(path, "w") as handle:
        entry = _group(handle, "entry", "NXentry")
        if definition:
            _string(entry, "definition", definition)
        _string(entry, "start_time", "2026-01-01T00:00:00Z")

        data_group = _group(entry, "data", "NXdata")
        for number, name in enumerate(data_files, start=1):
            data_group[f"data_{number:06d}"] = h5py.ExternalLink(
                name, "/entry/data/data"
            )
        if nxmx:
            layout = h5py.VirtualLayout(shape=(n_frames, ny, nx), dtype=dtype)
            for number, name in enumerate(data_files):
                first = number * per_file
                count = min(per_file, n_frames - first)
                source = h5py.VirtualSource(
                    name, "/entry/data/data", shape=(count, ny, nx), dtype=dtype
                )
                layout[first : first + count] = source
            data_group.create_virtual_dataset("data", layout, fillvalue=0)
            data_group.attrs["signal"] = np.bytes_("data")

        instrument = _group(entry, "instrument", "NXinstrument")
        _string(
            instrument, "name", "dials-diffuse simulated beamline", short_name="SIM"
        )
        beam_group = _group(instrument, "beam", "NXbeam")
        _value(beam_group, "incident_wavelength", wavelength, "angstrom")
        if transmission is not None:
            attenuator = _group(instrument, "attenuator", "NXattenuator")
            _value(attenuator, "attenuator_transmission", transmission)

        det = _group(instrument, "detector", "NXdetector")
        _string(det, "description", "Dectris EIGER2 Si 500K (simulated)")
        _string(det, "detector_number", "E-SIM-0001")
        _string(
            det, "sensor_material", SENSOR_NAMES.get(panel.get_material(), "Silicon")
        )
        _value(det, "sensor_thickness", panel.get_thickness() / 1000.0, "m")
        _value(det, "x_pixel_size", pixel_mm / 1000.0, "m")
        _value(det, "y_pixel_size", pixel_mm / 1000.0, "m")
        _value(det, "beam_center_x", beam_x, "pixel")
        _value(det, "beam_center_y", beam_y, "pixel")
        _value(det, "detector_distance", distance_mm / 1000.0, "m")
        _value(det, "count_time", exposure_s, "s")
        _value(det, "frame_time", exposure_s, "s")
        _value(det, "bit_depth_image", np.dtype(dtype).itemsize * 8, dtype="i4")
        _value(det, "bit_depth_readout", np.dtype(dtype).itemsize * 8, dtype="i4")
        specific = _group(det, "detectorSpecific", "NXcollection")
        if pixel_mask is not None:
            _value(det, "pixel_mask_applied", 1, dtype="i4")
            det.create_dataset(
                "pixel_mask", data=pixel_mask.astype(np.uint32), **hdf5plugin.LZ4()
            )
            specific["pixel_mask"] = h5py.SoftLink(
                "/entry/instrument/detector/pixel_mask"
            )
        cutoff = int(panel.get_trusted_range()[1])
        _value(specific, "nimages", n_frames, dtype="i8")
        _value(specific, "ntrigger", 1, dtype="i8")
        _value(specific, "x_pixels_in_detector", nx, dtype="i4")
        _value(specific, "y_pixels_in_detector", ny, dtype="i4")
        _value(specific, "countrate_correction_count_cutoff", cutoff, dtype="i4")
        _value(specific, "photon_energy", HC_EV_ANGSTROM / wavelength, "eV")

        if scan is not None:
            start, width = scan.get_oscillation()
            omega = start + width * np.arange(n_frames)
            increment = np.full(n_frames, width)
        else:
            omega = np.zeros(n_frames)
            increment = np.zeros(n_frames)
        sample = _group(entry, "sample", "NXsample")
        _string(sample, "name", "simulated sample")
        gonio = _group(sample, "goniometer", "NXcollection")
        _value(gonio, "omega_range_average", float(increment[0]), "deg")
        _value(gonio, "omega_increment", float(increment[0]), "deg")

        if nxmx:
            _value(det, "saturation_value", cutoff, dtype="i4")
            _nxmx_detector_geometry(
                det, panel, modules or [(0, 0, *shape)], distance_mm, pixel_mm
            )
            axis = (
                (1.0, 0.0, 0.0)
                if goniometer is None
                else goniometer.get_rotation_axis()
            )
            _nxmx_sample_geometry(sample, omega, increment, axis)
        else:
            if geometry == "dectris":
                _dectris_detector_geometry(det, panel)
            _value(gonio, "omega", omega, "deg")
        for key in omit:
            if OPTIONAL_HEADER[key] in entry:
                del entry[OPTIONAL_HEADER[key]]


def _nxmx_detector_geometry(det, panel, tiles, distance_mm, pixel_mm):
    """NXmx transformations and the NXdetector_modules of a flat panel.

    One module per tile (first row, first column, rows, columns) of the
    frame, each placed where its pixels lie on `panel`; modules are named
    ``module`` (one) or ``module_00``, ``module_01``, ... (HDF5 order, the
    panel order dxtbx gives).
    """
    transformations = _group(det, "transformations", "NXtransformations")
    _axis(
        transformations,
        "translation",
        distance_mm,
        (0.0, 0.0, 1.0),
        "translation",
        ".",
        "mm",
    )
    _string(det, "depends_on", "/entry/instrument/detector/transformations/translation")
    fast_mcstas = MCSTAS_FROM_IMGCIF @ np.array(panel.get_fast_axis())
    slow_mcstas = MCSTAS_FROM_IMGCIF @ np.array(panel.get_slow_axis())
    for number, (row, column, rows, columns) in enumerate(tiles):
        name = "module" if len(tiles) == 1 else f"module_{number:02d}"
        module = _group(det, name, "NXdetector_module")
        _value(module, "data_origin", [row, column], dtype="i4")
        _value(module, "data_size", [rows, columns], dtype="i4")
        offset_mcstas = MCSTAS_FROM_IMGCIF @ np.array(panel.get_origin())
        offset_mcstas += pixel_mm * (column * fast_mcstas + row * slow_mcstas)
        offset_mcstas[2] = 0.0  # the distance is the detector translation
        offset_length = float(np.linalg.norm(offset_mcstas))
        _axis(
            module,
            "module_offset",
            offset_length,
            offset_mcstas / offset_length,
            "translation",
            "/entry/instrument/detector/transformations/translation",
            "mm",
        )
        for axis_name, axis in (
            ("fast_pixel_direction", fast_mcstas),
            ("slow_pixel_direction", slow_mcstas),
        ):
            _axis(
                module,
                axis_name,
                pixel_mm,
                axis,
                "translation",
                f"/entry/instrument/detector/{name}/module_offset",
                "mm",
                offset=np.zeros(3),
            )


def _nxmx_sample_geometry(sample, omega, increment, axis):
    """The NXmx goniometer: one omega rotation axis the sample depends on."""
    _string(sample, "depends_on", "/entry/sample/transformations/omega")
    transformations = _group(sample, "transformations", "NXtransformations")
    _axis(
        transformations,
        "omega",
        omega,
        MCSTAS_FROM_IMGCIF @ np.array(axis),
        "rotation",
        ".",
        "deg",
    )
    _value(transformations, "omega_increment_set", increment, "deg")
    _value(transformations, "omega_end", omega + increment, "deg")
    gonio = sample["goniometer"]
    gonio["omega"] = h5py.SoftLink("/entry/sample/transformations/omega")
    gonio["omega_end"] = h5py.SoftLink("/entry/sample/transformations/omega_end")


def _dectris_detector_geometry(det, panel):
    """DECTRIS ``geometry/orientation`` and ``geometry/translation`` (m).

    As the EIGER file writer records them and dxtbx's
    ``FormatHDF5EigerNearlyNexus`` reads them (it flips z of both).
    """
    geometry = _group(det, "geometry", "NXgeometry")
    fast = MCSTAS_FROM_IMGCIF @ np.array(panel.get_fast_axis())
    slow = MCSTAS_FROM_IMGCIF @ np.array(panel.get_slow_axis())
    flip_z = np.array([1.0, 1.0, -1.0])
    orientation = _group(geometry, "orientation", "NXorientation")
    _value(orientation, "value", np.concatenate([fast * flip_z, slow * flip_z]))
    translation = _group(geometry, "translation", "NXtranslation")
    origin_m = MCSTAS_FROM_IMGCIF @ np.array(panel.get_origin()) / 1000.0
    _value(translation, "distances", origin_m * flip_z, "m")


def write_eiger_dataset(
    directory,
    prefix,
    frames,
    n_frames,
    shape,
    *,
    dtype=np.uint16,
    per_file=100,
    compression="bslz4",
    desc="writing frames",
    **master_kwargs,
):
    """Write data files from `frames` and their master; return the master path.

    `master_kwargs` go to `write_master` (beam, detector, pixel_mask,
    exposure_s, scan, goniometer, geometry, definition, transmission, omit).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data_files = write_data_files(
        directory,
        prefix,
        frames,
        n_frames=n_frames,
        shape=shape,
        dtype=dtype,
        frames_per_file=per_file,
        compression=compression,
        desc=desc,
    )
    master = directory / f"{prefix}_master.h5"
    write_master(master, data_files, n_frames, shape, dtype, per_file, **master_kwargs)
    return master


def write_dectris_files(
    directory,
    prefix,
    frames,
    *,
    n_frames,
    shape,
    dtype=np.uint16,
    frames_per_file=100,
    compression="bslz4",
    x_pixel_size=75e-6,
    y_pixel_size=75e-6,
    detector_distance=0.2,
    beam_center=None,
    wavelength=1.0,
    photon_energy=None,
    sensor_material="Si",
    sensor_thickness=450e-6,
    count_time=0.1,
    countrate_cutoff=None,
    pixel_mask=None,
    omega_start=0.0,
    omega_increment=0.1,
    description="Dectris EIGER 1M",
    geometry="flat",
    definition=None,
):
    """A DECTRIS series with the flat header from header values; the master's path.

    Values as the header states them: pixel sizes, distance and thickness in
    m, beam centre (x, y) in px (default the detector centre), wavelength in
    Å, photon energy in eV (written instead of the wavelength when given),
    count time in s, omega in degrees (an increment of 0 or None: stills).
    A value given as None is left out of the header. For tests and
    benchmarks that state a header rather than models: the models go to
    `write_eiger_dataset`.
    """
    from dxtbx.model import BeamFactory, DetectorFactory, ScanFactory

    beam_center = beam_center or (shape[1] / 2, shape[0] / 2)
    pixel_mm = (1000 * x_pixel_size, 1000 * y_pixel_size)
    energy_wavelength = HC_EV_ANGSTROM / photon_energy if photon_energy else None
    beam = BeamFactory.simple(wavelength or energy_wavelength or 1.0)
    high = countrate_cutoff or float(np.iinfo(dtype).max)
    detector = DetectorFactory.simple(
        "PAD",
        1000 * (detector_distance or 0.1),
        (beam_center[0] * pixel_mm[0], beam_center[1] * pixel_mm[1]),
        "+x",
        "-y",
        pixel_mm,
        (shape[1], shape[0]),
        (-1, high),
        [],
    )
    detector[0].set_thickness(1000 * (sensor_thickness or 0.0))
    detector[0].set_material(sensor_material or "Si")
    scan = None
    if omega_increment:
        scan = ScanFactory.make_scan(
            (1, n_frames),
            count_time,
            (omega_start, omega_increment),
            list(range(n_frames)),
            deg=True,
        )
    header = {
        "detector_distance": detector_distance,
        "beam_center_x": beam_center,
        "beam_center_y": beam_center,
        "incident_wavelength": wavelength,
        "photon_energy": photon_energy,
        "sensor_material": sensor_material,
        "sensor_thickness": sensor_thickness,
        "countrate_correction_count_cutoff": countrate_cutoff,
        "description": description,
    }
    master = write_eiger_dataset(
        directory,
        prefix,
        frames,
        n_frames,
        shape,
        dtype=dtype,
        per_file=frames_per_file,
        compression=compression,
        beam=beam,
        detector=detector,
        pixel_mask=pixel_mask,
        exposure_s=count_time,
        scan=scan,
        geometry=geometry,
        definition=definition,
        omit=[key for key, value in header.items() if value is None],
    )
    return master
