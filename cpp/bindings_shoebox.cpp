// Python binding of the shoebox kernels (shoebox.h): argument checks, then
// the work with the GIL released.
#include "bindings.h"
#include "shoebox.h"

namespace dials_diffuse {

namespace {

ShoeboxRecords check_records(const py::array &blob, const py::array &offset,
                             const py::array &pixels, const py::array &mask_bytes) {
  for (const auto &pair : {std::make_pair(&blob, "blob"),
                           std::make_pair(&offset, "offset"),
                           std::make_pair(&pixels, "pixels"),
                           std::make_pair(&mask_bytes, "mask_bytes")}) {
    require_contiguous(*pair.first, pair.second);
    if (pair.first->ndim() != 1) {
      throw std::invalid_argument(std::string(pair.second) +
                                  " must be 1-dimensional");
    }
  }
  auto is = [](const py::array &a, char kind, py::ssize_t size) {
    return a.dtype().kind() == kind && a.dtype().itemsize() == size;
  };
  if (!is(blob, 'u', 1)) throw std::invalid_argument("blob must be uint8");
  if (!is(offset, 'i', 8) || !is(pixels, 'i', 8)) {
    throw std::invalid_argument("offset and pixels must be int64");
  }
  if (!is(mask_bytes, 'i', 1)) {
    throw std::invalid_argument("mask_bytes must be int8");
  }
  const std::size_t n = static_cast<std::size_t>(offset.shape(0));
  if (static_cast<std::size_t>(pixels.shape(0)) != n ||
      static_cast<std::size_t>(mask_bytes.shape(0)) != n) {
    throw std::invalid_argument(
        "offset, pixels and mask_bytes must have the same length");
  }
  const ShoeboxRecords records{static_cast<const std::uint8_t *>(blob.data()),
                               static_cast<std::size_t>(blob.shape(0)),
                               static_cast<const std::int64_t *>(offset.data()),
                               static_cast<const std::int64_t *>(pixels.data()),
                               static_cast<const std::int8_t *>(mask_bytes.data()),
                               n};
  records.check();
  return records;
}

// shoebox_layout(blob, count) -> (panel, bbox, offset, pixels, mask_bytes)
py::tuple shoebox_layout(const py::array &blob, std::int64_t count) {
  require_contiguous(blob, "blob");
  if (!(blob.dtype().kind() == 'u' && blob.dtype().itemsize() == 1) ||
      blob.ndim() != 1) {
    throw std::invalid_argument("blob must be a 1-d uint8 array");
  }
  if (count < 0) throw std::invalid_argument("count must not be negative");
  const std::size_t n = static_cast<std::size_t>(count);
  py::array_t<std::uint32_t> panel(n);
  py::array_t<std::int32_t> bbox({static_cast<py::ssize_t>(n), py::ssize_t{6}});
  py::array_t<std::int64_t> offset(n);
  py::array_t<std::int64_t> pixels(n);
  py::array_t<std::int8_t> mask_bytes(n);
  std::string problem;
  {
    const auto *bytes = static_cast<const std::uint8_t *>(blob.data());
    const std::size_t size = static_cast<std::size_t>(blob.shape(0));
    auto *panel_ptr = panel.mutable_data();
    auto *bbox_ptr = bbox.mutable_data();
    auto *offset_ptr = offset.mutable_data();
    auto *pixels_ptr = pixels.mutable_data();
    auto *mask_ptr = mask_bytes.mutable_data();
    py::gil_scoped_release release;
    problem = walk_shoeboxes(bytes, size, n, panel_ptr, bbox_ptr, offset_ptr,
                             pixels_ptr, mask_ptr);
  }
  if (!problem.empty()) throw std::invalid_argument(problem);
  return py::make_tuple(panel, bbox, offset, pixels, mask_bytes);
}

// shoebox_histogram(blob, offset, pixels, mask_bytes, group, required, low,
// high, counts, tally): counts (groups x bins) and tally (groups x 4) in place.
void shoebox_histogram(const py::array &blob, const py::array &offset,
                       const py::array &pixels, const py::array &mask_bytes,
                       const py::array &group, std::uint32_t required, double low,
                       double high, py::array counts, py::array tally) {
  const auto records = check_records(blob, offset, pixels, mask_bytes);
  require_contiguous(group, "group");
  require_contiguous(counts, "counts");
  require_contiguous(tally, "tally");
  if (!(group.dtype().kind() == 'i' && group.dtype().itemsize() == 4) ||
      group.ndim() != 1 || static_cast<std::size_t>(group.shape(0)) != records.n) {
    throw std::invalid_argument("group must be int32 with one entry per record");
  }
  if (!(counts.dtype().kind() == 'i' && counts.dtype().itemsize() == 8) ||
      counts.ndim() != 2 || !counts.writeable()) {
    throw std::invalid_argument("counts must be a writeable 2-d int64 array");
  }
  const std::size_t groups = static_cast<std::size_t>(counts.shape(0));
  const std::size_t bins = static_cast<std::size_t>(counts.shape(1));
  if (!(tally.dtype().kind() == 'i' && tally.dtype().itemsize() == 8) ||
      tally.ndim() != 2 || static_cast<std::size_t>(tally.shape(0)) != groups ||
      tally.shape(1) != 4 || !tally.writeable()) {
    throw std::invalid_argument("tally must be a writeable int64 array (groups, 4)");
  }
  check_bins(low, high, static_cast<std::int64_t>(bins));
  const auto *group_ptr = static_cast<const std::int32_t *>(group.data());
  for (std::size_t i = 0; i < records.n; ++i) {
    if (group_ptr[i] < 0 || static_cast<std::size_t>(group_ptr[i]) >= groups) {
      throw std::invalid_argument("group " + std::to_string(group_ptr[i]) +
                                  " is outside the counts rows");
    }
  }
  auto *counts_ptr = static_cast<std::int64_t *>(counts.mutable_data());
  auto *tally_ptr = static_cast<std::int64_t *>(tally.mutable_data());
  py::gil_scoped_release release;
  histogram_shoeboxes(records, group_ptr, required, low, high, bins, counts_ptr,
                      tally_ptr);
}

// shoebox_value_range(blob, offset, pixels, mask_bytes, required)
// -> (selected, min, max, all_integer) over the selected, non-NaN pixels.
py::tuple shoebox_value_range_py(const py::array &blob, const py::array &offset,
                                 const py::array &pixels, const py::array &mask_bytes,
                                 std::uint32_t required) {
  const auto records = check_records(blob, offset, pixels, mask_bytes);
  ValueRange range;
  {
    py::gil_scoped_release release;
    range = shoebox_value_range(records, required);
  }
  return py::make_tuple(range.selected, range.lowest, range.highest, range.integer);
}

}  // namespace

void bind_shoebox(py::module_ &m) {
  m.def("shoebox_layout", &shoebox_layout, py::arg("blob"), py::arg("count"),
        R"doc(Walk a serialised DIALS shoebox column (GIL released).

Parameters
----------
blob : ndarray of uint8
    The binary body of a `Shoebox<>` column as DIALS serialises it.
count : int
    Number of shoeboxes (rows) it holds.

Returns
-------
(panel uint32 (n,), bbox int32 (n, 6), offset int64 (n,) byte offset of the
data or -1 when the shoebox holds none, pixels int64 (n,), mask_bytes int8
(n,) 4 or 1, 0 without data). ValueError on a truncated or corrupt blob.
)doc");
  m.def("shoebox_histogram", &shoebox_histogram, py::arg("blob"),
        py::arg("offset"), py::arg("pixels"), py::arg("mask_bytes"),
        py::arg("group"), py::arg("required"), py::arg("low"),
        py::arg("high"), py::arg("counts"), py::arg("tally"),
        R"doc(Histogram selected shoebox pixels per group, in place (GIL released).

A pixel is selected when (mask & required) == required. counts (groups,
bins) int64 uses numpy's bins on [low, high]; tally (groups, 4) int64 adds
underflow, overflow, NaN and excluded pixels.
)doc");
  m.def("shoebox_value_range", &shoebox_value_range_py, py::arg("blob"),
        py::arg("offset"), py::arg("pixels"), py::arg("mask_bytes"),
        py::arg("required"),
        R"doc(Number, minimum, maximum of the selected non-NaN pixels and
whether all are whole numbers (GIL released).
)doc");
}

}  // namespace dials_diffuse
