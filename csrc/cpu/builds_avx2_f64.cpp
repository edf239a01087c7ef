// The AVX2 (32-byte vectors) builds of the scan with double accumulation (scan_builds.h).
#include "scan_builds.h"

namespace sae {
namespace cpu {

const ScanBuilds kWideDouble = SAE_SCAN_BUILDS(scan_rows_wide, walk_chained_wide, double);

}  // namespace cpu
}  // namespace sae
