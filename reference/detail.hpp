// Internal helpers of the brute-force reference, shared only between reference/*.cpp.
#pragma once

#include "klcal/types.hpp"

namespace klcal::reference::detail {

/// The reference's own check of a histogram spec against docs/numerics.md section 6 (it must
/// not call klcal::validate from src/, which it exists to check).
status check_spec(const histogram_spec& spec) noexcept;

}  // namespace klcal::reference::detail
