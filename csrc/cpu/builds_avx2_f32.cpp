// The AVX2 (32-byte vectors) builds of the scan with float accumulation (scan_builds.h).
#include "scan_builds.h"

namespace sae {
namespace cpu {

const ScanBuilds kWideFloat = SAE_SCAN_BUILDS(scan_rows_wide, walk_chained_wide, float);

}  // namespace cpu
}  // namespace sae
