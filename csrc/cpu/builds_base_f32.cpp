// The baseline (16-byte vectors: SSE2, NEON) builds of the scan with float accumulation (scan_builds.h).
#include "scan_builds.h"

namespace sae {
namespace cpu {

const ScanBuilds kBaseFloat = SAE_SCAN_BUILDS(scan_rows_base, walk_chained_base, float);

}  // namespace cpu
}  // namespace sae
