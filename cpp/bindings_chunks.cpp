// Python bindings of the chunk placing and deflate kernels (chunks.h,
// codecs.h): argument checks, then the work with the GIL released.
#include <pybind11/stl.h>

#include "bindings.h"
#include "chunks.h"
#include "codecs.h"

namespace dials_diffuse {

namespace {

NonnegativeRun nonnegative_function(const py::array &out) {
  return dispatch_pixel_dtype(out, "out", [](auto zero) -> NonnegativeRun {
    return &nonnegative_run<decltype(zero)>;
  });
}

void check_out(const py::array &out) {
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  if (out.ndim() != 3) {
    throw std::invalid_argument("out must be 3-d (frames, rows, columns)");
  }
}

std::array<std::int64_t, 3> shape3(const py::array &out) {
  return {out.shape(0), out.shape(1), out.shape(2)};
}

// Python: place_chunk(chunk, chunk_shape, out, origin, shuffled=False) -> out
py::array place_chunk(const py::object &chunk,
                             const std::array<std::int64_t, 3> &chunk_shape,
                             py::array out, const std::array<std::int64_t, 3> &origin,
                             bool shuffled) {
  check_out(out);
  check_chunk_shape(chunk_shape);
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(chunk).request();
  const std::size_t size = static_cast<std::size_t>(out.itemsize());
  const std::size_t total =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]);
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(info.size) * static_cast<std::size_t>(info.itemsize);
  if (chunk_bytes != total * size) {
    throw std::invalid_argument("chunk has " + std::to_string(chunk_bytes) +
                                " bytes, expected " + std::to_string(total * size) +
                                " for its shape and out's dtype");
  }
  std::array<std::int64_t, 3> lo{}, hi{};
  const std::array<std::int64_t, 3> out_shape = shape3(out);
  if (!chunk_overlap(chunk_shape, origin, out_shape, lo, hi)) return out;
  const auto *src = static_cast<const std::uint8_t *>(info.ptr);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    place_decoded(src, chunk_shape, origin, lo, hi, out_shape, size, shuffled, dst,
                  nullptr, nullptr);
  }
  return out;
}

// Python: place_chunks(chunks, origins, chunk_shape, out, codec, valid=None) -> out
py::array place_chunks(const py::list &chunks,
                              const std::vector<std::array<std::int64_t, 3>> &origins,
                              const std::array<std::int64_t, 3> &chunk_shape,
                              py::array out, int codec_value, const py::object &valid) {
  const ChunkCodec codec = chunk_codec_from_int(codec_value);
  check_out(out);
  check_chunk_shape(chunk_shape);
  if (origins.size() != chunks.size()) {
    throw std::invalid_argument("chunks and origins must have the same length");
  }
  std::uint8_t *valid_ptr = nullptr;
  NonnegativeRun nonnegative = nullptr;
  if (!valid.is_none()) {
    valid_ptr = const_cast<std::uint8_t *>(mask_pointer(valid, out));
    if (!valid.cast<py::array>().writeable()) {
      throw std::invalid_argument("valid is read-only");
    }
    nonnegative = nonnegative_function(out);
  }
  const std::size_t size = static_cast<std::size_t>(out.itemsize());
  if ((codec == ChunkCodec::lz4 || codec == ChunkCodec::bitshuffle_lz4) &&
      size != 1 && size != 2 && size != 4 && size != 8) {
    throw std::invalid_argument("LZ4 chunks need 1, 2, 4 or 8-byte elements");
  }
  const std::size_t expected =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]) * size;
  std::vector<std::pair<const std::uint8_t *, std::size_t>> views;
  views.reserve(chunks.size());
  for (const auto &chunk : chunks) views.push_back(bytes_view(chunk));
  const std::array<std::int64_t, 3> out_shape = shape3(out);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < views.size(); ++i) {
      std::array<std::int64_t, 3> lo{}, hi{};
      if (!chunk_overlap(chunk_shape, origins[i], out_shape, lo, hi)) continue;
      const std::uint8_t *decoded =
          decode_raw_chunk(views[i].first, views[i].second, codec, size, expected);
      place_decoded(decoded, chunk_shape, origins[i], lo, hi, out_shape, size,
                    codec == ChunkCodec::shuffle_deflate, dst, valid_ptr, nonnegative);
    }
  }
  return out;
}

// Python: inflate(chunk, out) -> out: a zlib stream decoded into exactly out's bytes.
py::array inflate(const py::object &chunk, py::array out) {
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  auto view = bytes_view(chunk);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  const std::size_t expected = static_cast<std::size_t>(out.nbytes());
  {
    py::gil_scoped_release release;
    inflate_zlib(view.first, view.second, dst, expected);
  }
  return out;
}

// Python: deflate_tiles(block, chunk_shape, level=1, shuffle=False, runs=False)
py::list deflate_tiles(py::array block,
                              const std::array<std::int64_t, 3> &chunk_shape, int level,
                              bool shuffle, bool runs) {
  require_contiguous(block, "block");
  if (block.ndim() != 3) {
    throw std::invalid_argument("block must be 3-d (frames, rows, columns)");
  }
  check_chunk_shape(chunk_shape);
  if (block.shape(0) > chunk_shape[0]) {
    throw std::invalid_argument("block has " + std::to_string(block.shape(0)) +
                                " frames, a chunk " + std::to_string(chunk_shape[0]));
  }
  if (level < 0 || level > 12) {
    throw std::invalid_argument("level must be 0-12 (libdeflate)");
  }
  const std::array<std::int64_t, 3> block_shape{block.shape(0), block.shape(1),
                                                block.shape(2)};
  const std::size_t size = static_cast<std::size_t>(block.itemsize());
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(chunk_shape[0] * chunk_shape[1] * chunk_shape[2]) * size;
  const auto *src = static_cast<const std::uint8_t *>(block.data());
  std::vector<std::uint8_t> stored;  // the compressed tiles, end to end
  std::vector<std::size_t> ends;
  {
    py::gil_scoped_release release;
    static const MaskDeflater mask_deflater;
    libdeflate_compressor *compressor = runs ? nullptr : thread_compressor(level);
    const std::size_t bound =
        runs ? MaskDeflater::bound(chunk_bytes)
             : libdeflate_zlib_compress_bound(compressor, chunk_bytes);
    std::uint8_t *tile = thread_buffer(Buffer::chunk, chunk_bytes);
    std::uint8_t *compressed = thread_buffer(Buffer::compressed, bound);
    // The distance to the row above in a (shuffled) chunk.
    const std::size_t row_bytes =
        static_cast<std::size_t>(chunk_shape[2]) * (shuffle ? 1 : size);
    for (std::int64_t row = 0; row < block_shape[1]; row += chunk_shape[1]) {
      for (std::int64_t column = 0; column < block_shape[2]; column += chunk_shape[2]) {
        gather_tile(src, block_shape, chunk_shape, row, column, size, shuffle, tile);
        const std::size_t n =
            runs ? mask_deflater.compress(tile, chunk_bytes, row_bytes, compressed)
                 : libdeflate_zlib_compress(compressor, tile, chunk_bytes, compressed,
                                            bound);
        if (n == 0) throw std::runtime_error("libdeflate could not compress a chunk");
        stored.insert(stored.end(), compressed, compressed + n);
        ends.push_back(stored.size());
      }
    }
  }
  py::list result;
  std::size_t start = 0;
  for (std::size_t end : ends) {
    result.append(py::bytes(reinterpret_cast<const char *>(stored.data() + start),
                            end - start));
    start = end;
  }
  return result;
}

py::array stored_to_dxtbx_frames(const py::array &stored, std::int64_t top, double low,
                                 double high, bool inclusive,
                                 const py::array_t<bool> &static_mask, py::array &out,
                                 py::array &valid) {
  if (stored.ndim() != 3 || !(stored.flags() & py::array::c_style))
    throw std::invalid_argument("stored must be a C-contiguous 3-d array");
  const auto frames = static_cast<std::size_t>(stored.shape(0));
  const auto frame_pixels = static_cast<std::size_t>(stored.shape(1) * stored.shape(2));
  const auto check = [&](const py::array &a, const char *name, char kind, int size,
                         std::size_t n) {
    if (a.dtype().kind() != kind || a.dtype().itemsize() != size ||
        static_cast<std::size_t>(a.size()) != n || !(a.flags() & py::array::c_style) ||
        !a.writeable())
      throw std::invalid_argument(std::string(name) + " has the wrong type or shape");
  };
  check(out, "out", 'i', 4, frames * frame_pixels);
  check(valid, "valid", 'b', 1, frames * frame_pixels);
  if (static_mask.ndim() != 2 || static_cast<std::size_t>(static_mask.size()) != frame_pixels ||
      !(static_mask.flags() & py::array::c_style))
    throw std::invalid_argument("static_mask must be one C-contiguous frame of bool");
  auto *dst = static_cast<std::int32_t *>(out.mutable_data());
  auto *ok = static_cast<std::uint8_t *>(valid.mutable_data());
  const auto *mask = reinterpret_cast<const std::uint8_t *>(static_mask.data());
  dispatch_pixel_dtype(stored, "stored", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T> && sizeof(T) <= 4) {
      const T *values = static_cast<const T *>(stored.data());
      py::gil_scoped_release release;
      stored_to_dxtbx(values, frames, frame_pixels, top, low, high, inclusive, mask,
                      dst, ok);
    } else {
      throw std::invalid_argument("stored must hold integers of at most 32 bits");
    }
  });
  return out;
}

}  // namespace

void bind_chunks(py::module_ &m) {
  m.def("stored_to_dxtbx", &stored_to_dxtbx_frames, py::arg("stored"), py::arg("top"),
        py::arg("low"), py::arg("high"), py::arg("inclusive"), py::arg("static_mask"),
        py::arg("out"), py::arg("valid"),
        R"doc(Stored integer frames as dxtbx's NXmx reader gives them, and their validity, GIL released.

Parameters
----------
stored : ndarray (frames, rows, columns), C-contiguous, integers of at most 32 bits
top : int
    2^N for an N-bit readout: 2^N - 1 becomes -1 and 2^N - 2 becomes -2
    (as FormatNXmx.get_raw_data); 0: no markers.
low, high : float
    The panel's trusted range.
inclusive : bool
    The range includes its ends (dxtbx >= 3.12) or not (dxtbx 3.11).
static_mask : ndarray of bool (rows, columns)
out : ndarray of int32, stored's shape, C-contiguous: the values
valid : ndarray of bool, stored's shape, C-contiguous: static mask and range

Returns
-------
out
)doc");
  m.def("place_chunk", &place_chunk, py::arg("chunk"), py::arg("chunk_shape"),
        py::arg("out"), py::arg("origin"), py::arg("shuffled") = false,
        R"doc(Copy the part of a decoded HDF5 chunk inside `out` into it, GIL released.

Parameters
----------
chunk : bytes or buffer
    The decoded (decompressed) chunk: prod(chunk_shape) elements of
    out's dtype, in HDF5's byte order for the chunk (shuffled or not).
chunk_shape : (int, int, int)
    The dataset's chunk shape (edge chunks are stored whole).
out : ndarray, 3-d, C-contiguous, writeable
    The output block (frames, rows, columns).
origin : (int, int, int)
    Where element [0, 0, 0] of the chunk lies in out's coordinates (may be
    negative or beyond out: only the overlap is copied).
shuffled : bool
    The chunk was written with HDF5's shuffle filter (byte planes).

Returns
-------
out
)doc");
  m.def("place_chunks", &place_chunks, py::arg("chunks"), py::arg("origins"),
        py::arg("chunk_shape"), py::arg("out"), py::arg("codec"),
        py::arg("valid") = py::none(),
        R"doc(Decode raw HDF5 chunks and copy their parts inside `out` into it, GIL released.

One call per block: each chunk is decoded (libdeflate for deflate, the LZ4
codecs of decompress_chunk) into a per-thread scratch buffer and placed,
the shuffle filter undone on the way.

Parameters
----------
chunks : list of bytes (or 1-d uint8 arrays)
    The chunks as stored in the file.
origins : list of (int, int, int)
    Where element [0, 0, 0] of each chunk lies in out's coordinates (may
    be negative or beyond out: only the overlap is copied).
chunk_shape : (int, int, int)
    The dataset's chunk shape (edge chunks are stored whole).
out : ndarray, 3-d, C-contiguous, writeable
    The output block (frames, rows, columns), native byte order.
codec : int
    0 uncompressed, 1 LZ4 (filter 32004), 2 bitshuffle/LZ4 (32008),
    3 deflate (gzip, filter 1), 4 shuffle (filter 2) then deflate.
valid : ndarray of bool, shape of out, optional
    Set to out >= 0 (False for NaN, True for unsigned types) where chunks
    are placed, while the values are in cache.

Returns
-------
out

Raises
------
ValueError
    Bad arguments, or a corrupt or truncated chunk.
)doc");
  m.def("inflate", &inflate, py::arg("chunk"), py::arg("out"),
        R"doc(Decode one zlib stream (an HDF5 deflate chunk) into `out`, GIL released.

Parameters
----------
chunk : bytes or 1-d uint8 array
out : ndarray, C-contiguous, writeable
    Receives exactly out.nbytes bytes.

Returns
-------
out

Raises
------
ValueError
    Corrupt or truncated stream, or one that decodes to another size.
)doc");
  m.def("deflate_tiles", &deflate_tiles, py::arg("block"), py::arg("chunk_shape"),
        py::arg("level") = 1, py::arg("shuffle") = false, py::arg("runs") = false,
        R"doc(Compress a block of frames into whole HDF5 chunks (libdeflate), GIL released.

Parameters
----------
block : ndarray (frames, rows, columns), C-contiguous
    At most chunk_shape[0] frames, every row and column of the dataset.
chunk_shape : (int, int, int)
level : int
    Compression level 0-12 (libdeflate; 1 is fast, 6 is zlib's default).
shuffle : bool
    Apply HDF5's shuffle filter (byte planes) before deflate.
runs : bool
    Code only repeats of the previous byte or of the row above (LZ77 with
    two candidate distances, fixed Huffman codes; `level` ignored): for
    masks, several times faster than libdeflate and about as small; up to
    1/8 larger than the input for data without runs.

Returns
-------
list of bytes
    One zlib stream per chunk, rows then columns (C order of the tiles);
    edge chunks are padded with zeros to the whole chunk shape, as HDF5
    stores them. Any zlib/HDF5 gzip reader decodes them.
)doc");
}


}  // namespace dials_diffuse
