// Python bindings of the Eiger chunk decoder (codecs.h) and the per-frame
// statistics (frame_stats.h): argument checks, then the work with the
// GIL released.
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "codecs.h"
#include "frame_stats.h"

namespace dials_diffuse {

namespace {

// The LZ4 codecs of codecs.h that one chunk per frame may use.
ChunkCodec lz4_codec_from_int(int codec) {
  if (codec < 0 || codec > 2) {
    throw std::invalid_argument("codec must be 0 (none), 1 (lz4) or 2 (bitshuffle_lz4)");
  }
  return static_cast<ChunkCodec>(codec);
}

// Dispatch fn(T{}) over the Eiger pixel types (uint8/16/32).
template <typename Fn>
auto dispatch_eiger_dtype(const py::dtype &dt, Fn &&fn) {
  const bool native = dt.attr("isnative").cast<bool>();
  if (native && dt.kind() == 'u') {
    switch (dt.itemsize()) {
      case 1: return fn(std::uint8_t{});
      case 2: return fn(std::uint16_t{});
      case 4: return fn(std::uint32_t{});
    }
  }
  throw std::invalid_argument("Eiger chunks must be uint8, uint16 or uint32, not " +
                              dtype_name(dt));
}

// Python: decompress_chunk(chunk: bytes, codec: int, out: ndarray) -> out
py::array decompress_chunk(const py::object &chunk, int codec_value,
                                  py::array out) {
  const ChunkCodec codec = lz4_codec_from_int(codec_value);
  require_contiguous(out, "out");
  if (!out.writeable()) throw std::invalid_argument("out is read-only");
  const std::size_t elem_size = static_cast<std::size_t>(out.itemsize());
  const std::size_t expected = static_cast<std::size_t>(out.nbytes());
  auto view = bytes_view(chunk);
  auto *dst = static_cast<std::uint8_t *>(out.mutable_data());
  {
    py::gil_scoped_release release;
    decode_lz4_chunk(view.first, view.second, codec, elem_size, dst, expected);
  }
  return out;
}

py::tuple tallies_to_python(const std::vector<FrameTally> &tallies) {
  const py::ssize_t n = static_cast<py::ssize_t>(tallies.size());
  py::array_t<double> sums(n), maxima(n);
  py::array_t<std::int64_t> used(n), invalid(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    sums.mutable_data()[i] = tallies[i].sum;
    used.mutable_data()[i] = tallies[i].used;
    maxima.mutable_data()[i] = tallies[i].max;
    invalid.mutable_data()[i] = tallies[i].invalid;
  }
  return py::make_tuple(sums, used, maxima, invalid);
}

// A bool/uint8 array of `size` entries as bytes (nullptr for None): a byte
// mask (size n_pixels) or packed validity bits (size (n_pixels + 7) / 8).
const std::uint8_t *flat_mask(const py::object &mask, std::size_t size, const char *name,
                              std::size_t n_pixels) {
  if (mask.is_none()) return nullptr;
  py::array m = byte_array(mask, name);
  if (static_cast<std::size_t>(m.size()) != size) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(m.size()) +
                                " entries, not " + std::to_string(size) + " for " +
                                std::to_string(n_pixels) + " pixels");
  }
  return static_cast<const std::uint8_t *>(m.data());
}

// Python: compressed_frame_statistics(chunks, codec, dtype, n_pixels, low,
// high, mask=None, invalid_from=inf, mask_bits=None) -> (sum, used, max, invalid)
py::tuple compressed_frame_statistics(const py::list &chunks, int codec_value,
                                      const py::dtype &dtype, std::int64_t n_pixels,
                                      double low, double high, const py::object &mask,
                                      double invalid_from, const py::object &mask_bits,
                                      int word_kernels) {
  const ChunkCodec codec = lz4_codec_from_int(codec_value);
  if (n_pixels < 1) throw std::invalid_argument("n_pixels must be positive");
  const std::size_t n = static_cast<std::size_t>(n_pixels);
  if (!mask.is_none() && !mask_bits.is_none()) {
    throw std::invalid_argument("give mask or mask_bits, not both");
  }
  const std::uint8_t *bits = nullptr;
  std::vector<std::uint8_t> packed;
  if (!mask.is_none()) {
    const std::uint8_t *bytes = flat_mask(mask, n, "mask", n);
    packed.resize((n + 7) / 8);
    py::gil_scoped_release release;
    pack_valid_bits(bytes, n, packed.data());
    bits = packed.data();
  } else if (!mask_bits.is_none()) {
    bits = flat_mask(mask_bits, (n + 7) / 8, "mask_bits", n);
  }
  std::vector<std::pair<const std::uint8_t *, std::size_t>> views;
  for (const auto &chunk : chunks) views.push_back(bytes_view(chunk));
  std::vector<FrameTally> tallies(views.size());
  dispatch_eiger_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release release;
    for (std::size_t f = 0; f < views.size(); ++f) {
      try {
        tallies[f] = compressed_frame_tally<T>(views[f].first, views[f].second, codec, n,
                                               low, high, invalid_from, bits,
                                               word_kernels);
      } catch (const DecodeError &error) {
        throw DecodeError("chunk " + std::to_string(f) + ": " + error.what());
      }
    }
  });
  return tallies_to_python(tallies);
}

// Python: frame_statistics(data, low, high, mask=None, invalid_from=inf)
// for decoded frames `data` of shape (frames, rows, columns) (any pixel dtype).
py::tuple frame_statistics(const py::array &data, double low, double high,
                                  const py::object &mask, double invalid_from) {
  require_contiguous(data, "data");
  if (data.ndim() != 3) throw std::invalid_argument("data must be (frames, rows, columns)");
  const std::size_t n_frames = static_cast<std::size_t>(data.shape(0));
  const std::size_t n_pixels = static_cast<std::size_t>(data.shape(1) * data.shape(2));
  const std::uint8_t *mask_ptr = flat_mask(mask, n_pixels, "mask", n_pixels);
  std::vector<FrameTally> tallies(n_frames);
  dispatch_pixel_dtype(data, "data", [&](auto tag) {
    using T = decltype(tag);
    const T *values = static_cast<const T *>(data.data());
    py::gil_scoped_release release;
    for (std::size_t f = 0; f < n_frames; ++f) {
      FrameAccumulator<T> acc{low, high, invalid_from};
      acc.add(values + f * n_pixels, n_pixels, mask_ptr);
      tallies[f] = acc.result();
    }
  });
  return tallies_to_python(tallies);
}

}  // namespace

void bind_eiger(py::module_ &m) {
  py::register_exception<DecodeError>(m, "DecodeError", PyExc_ValueError);
  m.def("decompress_chunk", &decompress_chunk, py::arg("chunk"), py::arg("codec"),
        py::arg("out"),
        R"doc(Decode one raw HDF5 chunk (read_direct_chunk) into `out`, GIL released.

Parameters
----------
chunk : bytes or 1-d contiguous uint8 ndarray (e.g. a numpy.memmap slice)
    The raw chunk as stored in the file.
codec : int
    0 none, 1 LZ4 (HDF5 filter 32004), 2 bitshuffle+LZ4 (filter 32008).
out : ndarray, C-contiguous, writeable
    Receives the decoded pixels; its size and itemsize must match the chunk.

Returns
-------
out

Raises
------
DecodeError (a ValueError) for corrupt or truncated chunks.
)doc");
  m.def("compressed_frame_statistics", &compressed_frame_statistics,
        py::arg("chunks"), py::arg("codec"), py::arg("dtype"), py::arg("n_pixels"),
        py::arg("low"), py::arg("high"), py::arg("mask") = py::none(),
        py::arg("invalid_from") = std::numeric_limits<double>::infinity(),
        py::arg("mask_bits") = py::none(), py::arg("word_kernels") = 2,
        R"doc(Per-frame thresholded sums straight from compressed chunks, GIL released.

Each chunk (one frame) is decoded block by block into a small per-thread
buffer and summed on the fly: memory never holds a decoded frame.
Bitshuffle blocks are summed from their bit planes, never un-transposed.

Parameters
----------
chunks : list of bytes or 1-d contiguous uint8 ndarrays
    One raw chunk per frame.
codec : int
    0 none, 1 LZ4 (32004), 2 bitshuffle+LZ4 (32008).
dtype : numpy dtype
    uint8, uint16 or uint32.
n_pixels : int
    Pixels per frame.
low, high : float
    Pixels with low <= value <= high are used (counts).
mask : ndarray of bool/uint8, n_pixels entries, optional
    Nonzero marks a valid pixel.
invalid_from : float
    Values >= this are invalid (gap markers 2^N-1, overloads) and counted
    apart, never summed.
mask_bits : ndarray of uint8, (n_pixels + 7) // 8 entries, optional
    The mask as packed bits, numpy.packbits(valid, bitorder="little"):
    cheaper to pass for every call than a byte mask. Not with `mask`.
word_kernels : int
    The highest bit-plane word kernels to use, for tests (all give the same
    result): 2 AVX-512 VPOPCNTQ, 1 popcnt, 0 plain C++; the CPU may cap it
    (plane_kernel_level()).

Returns
-------
(sum float64, used int64, max float64 (NaN if none used), invalid int64),
one entry per frame.
)doc");
  m.def("plane_kernel_level", &plane_kernel_level,
        "The bit-plane word kernels this CPU runs: 2 AVX-512 VPOPCNTQ, 1 popcnt, "
        "0 plain C++.");
  m.def("frame_statistics", &frame_statistics, py::arg("data"), py::arg("low"),
        py::arg("high"), py::arg("mask") = py::none(),
        py::arg("invalid_from") = std::numeric_limits<double>::infinity(),
        R"doc(Per-frame thresholded sums of decoded frames, GIL released.

The same statistics as compressed_frame_statistics for data already in
memory: `data` (frames, rows, columns) of any pixel dtype, `mask` (rows,
columns) nonzero = valid.

Returns
-------
(sum float64, used int64, max float64, invalid int64) per frame.
)doc");
}

}  // namespace dials_diffuse
