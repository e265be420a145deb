// The map's frame and a light, hand-drawn sketch of Ho Chi Minh City: no tiles or fonts are
// fetched (the dashboard must work offline), so the outline, rivers and labels are approximate
// coordinates drawn by hand, good enough to orient an operator, not for navigation.

export const BOUNDS = { south: 10.64, north: 11.0, west: 106.45, east: 106.85 };

// Equirectangular, with longitude shrunk by cos(latitude) so that distances look right.
const K = Math.cos(((BOUNDS.south + BOUNDS.north) / 2) * (Math.PI / 180));
export const WIDTH = 1000;
export const HEIGHT = Math.round((WIDTH * (BOUNDS.north - BOUNDS.south)) / ((BOUNDS.east - BOUNDS.west) * K));

/** [x, y] in the SVG's viewBox for a latitude and longitude. */
export function project(lat, lng) {
  const x = ((lng - BOUNDS.west) / (BOUNDS.east - BOUNDS.west)) * WIDTH;
  const y = ((BOUNDS.north - lat) / (BOUNDS.north - BOUNDS.south)) * HEIGHT;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

// [lat, lng] pairs.
export const CITY_OUTLINE = [
  [10.985, 106.47], [10.995, 106.56], [10.975, 106.64], [10.93, 106.69], [10.905, 106.73],
  [10.895, 106.79], [10.86, 106.835], [10.8, 106.845], [10.755, 106.82], [10.715, 106.78],
  [10.675, 106.765], [10.655, 106.72], [10.66, 106.65], [10.675, 106.57], [10.7, 106.5],
  [10.76, 106.465], [10.84, 106.455], [10.92, 106.46],
];

// The urban core, drawn a shade lighter inside the city.
export const URBAN_CORE = [
  [10.87, 106.6], [10.885, 106.66], [10.87, 106.72], [10.86, 106.78], [10.82, 106.8],
  [10.78, 106.77], [10.74, 106.74], [10.72, 106.69], [10.73, 106.62], [10.76, 106.59],
  [10.81, 106.58],
];

export const RIVERS = [
  {
    name: 'Sông Sài Gòn',
    width: 7,
    points: [
      [11.0, 106.585], [10.975, 106.615], [10.945, 106.655], [10.915, 106.685], [10.885, 106.7],
      [10.86, 106.708], [10.84, 106.722], [10.828, 106.738], [10.815, 106.742], [10.803, 106.733],
      [10.806, 106.72], [10.82, 106.712], [10.826, 106.72], [10.815, 106.728], [10.796, 106.722],
      [10.78, 106.708], [10.768, 106.709], [10.757, 106.722], [10.745, 106.74], [10.725, 106.752],
      [10.7, 106.758], [10.675, 106.77], [10.64, 106.785],
    ],
  },
  {
    name: 'Sông Đồng Nai',
    width: 9,
    points: [
      [10.965, 106.85], [10.92, 106.835], [10.88, 106.84], [10.845, 106.825], [10.8, 106.8],
      [10.765, 106.79], [10.735, 106.775], [10.7, 106.758],
    ],
  },
  {
    name: 'Kênh Tàu Hủ',
    width: 2.5,
    points: [[10.768, 106.709], [10.752, 106.69], [10.748, 106.66], [10.742, 106.63], [10.735, 106.6]],
  },
  {
    name: 'Kênh Nhiêu Lộc',
    width: 2,
    points: [[10.796, 106.722], [10.79, 106.7], [10.795, 106.68], [10.8, 106.665]],
  },
];

export const LABELS = [
  { text: 'District 1', lat: 10.776, lng: 106.7 },
  { text: 'District 7', lat: 10.733, lng: 106.72 },
  { text: 'Thủ Đức', lat: 10.85, lng: 106.765 },
  { text: 'Gò Vấp', lat: 10.838, lng: 106.665 },
  { text: 'Tân Sơn Nhất ✈', lat: 10.818, lng: 106.655 },
  { text: 'Bình Tân', lat: 10.765, lng: 106.6 },
  { text: 'Củ Chi →', lat: 10.975, lng: 106.5 },
  { text: 'Nhà Bè', lat: 10.685, lng: 106.735 },
  { text: 'Bình Chánh', lat: 10.69, lng: 106.58 },
  { text: 'Hóc Môn', lat: 10.89, lng: 106.59 },
];

/** A smooth closed/open SVG path through the points (Catmull-Rom turned into Béziers). */
export function smoothPath(points, closed = false) {
  const p = points.map(([lat, lng]) => project(lat, lng));
  const n = p.length;
  const at = (i) => (closed ? p[(i + n) % n] : p[Math.max(0, Math.min(n - 1, i))]);
  let d = `M${p[0][0]},${p[0][1]}`;
  const last = closed ? n : n - 1;
  for (let i = 0; i < last; i++) {
    const [p0, p1, p2, p3] = [at(i - 1), at(i), at(i + 1), at(i + 2)];
    const c1 = [p1[0] + (p2[0] - p0[0]) / 6, p1[1] + (p2[1] - p0[1]) / 6];
    const c2 = [p2[0] - (p3[0] - p1[0]) / 6, p2[1] - (p3[1] - p1[1]) / 6];
    d += ` C${c1[0].toFixed(1)},${c1[1].toFixed(1)} ${c2[0].toFixed(1)},${c2[1].toFixed(1)} ${p2[0]},${p2[1]}`;
  }
  return closed ? d + 'Z' : d;
}
