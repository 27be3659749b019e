// Terminal states and their colours. The palette is Okabe & Ito's (2008) colour-blind-safe
// set of eight, assigned so that the two states people look for first (served vs. cut by
// policy) differ in both hue and lightness for every common colour-vision deficiency:
// served = bluish green, policy = vermillion; no_coverage is black, so "no signal at all" also
// stands out in greyscale. Only the colour depends on the state (see map.js: a redraw
// re-evaluates every state-dependent paint property of each changed terminal).
export const STATES = [
  "served",
  "degraded",
  "no_coverage",
  "policy",
  "satellite_failure",
  "no_backhaul",
  "jamming",
  "congestion",
];

export const COLORS = {
  served: "#009E73", // bluish green
  degraded: "#F0E442", // yellow
  no_coverage: "#000000", // black
  policy: "#D55E00", // vermillion
  satellite_failure: "#0072B2", // blue
  no_backhaul: "#56B4E9", // sky blue
  jamming: "#CC79A7", // reddish purple
  congestion: "#E69F00", // orange
};

export const LABELS = {
  served: "served",
  degraded: "degraded (served, slowed)",
  no_coverage: "cut: no coverage",
  policy: "cut: policy (geofence / rule)",
  satellite_failure: "cut: satellite failure",
  no_backhaul: "cut: no backhaul (gateway / PoP)",
  jamming: "cut: jamming",
  congestion: "cut: congestion",
};

export const UNKNOWN_COLOR = "#9e9e9e";

export function colorOf(state) {
  return COLORS[state] ?? UNKNOWN_COLOR;
}
