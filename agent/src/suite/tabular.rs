//! Tabular tasks: home-data-for-ml-course (mae), spaceship-titanic (accuracy),
//! nomad2018-predict-transparent-conductors (rmsle, 2 targets), tabular-playground-series-dec-2021 (accuracy).
//!
//! Each target is a known nonlinear function of several columns plus noise; the starter uses one column. The oracle
//! (its score is `m_best`) predicts the noise-free value, or the most probable class.

use super::common::{Generated, num, py_list, sigmoid, starter};
use crate::csvio::Table;
use crate::rng::Rng;

const LINEAR1: &str = include_str!("starters/linear1.py");
const BINNED: &str = include_str!("starters/binned.py");

fn split_push(i: usize, n_train: usize, train: &mut Table, test: &mut Table, feats: Vec<String>, target: Vec<String>) {
    if i < n_train {
        train.push(feats.into_iter().chain(target));
    } else {
        test.push(feats);
    }
}

/// home-data-for-ml-course: house prices, mae.
pub fn home_data(rng: &mut Rng) -> Generated {
    let hood = [("NAmes", 0.0), ("CollgCr", 15_000.0), ("OldTown", -20_000.0), ("Edwards", -15_000.0),
        ("Somerst", 30_000.0), ("NridgHt", 70_000.0), ("Gilbert", 10_000.0), ("Sawyer", -10_000.0)];
    let cols = ["Id", "LotArea", "Neighborhood", "OverallQual", "YearBuilt", "GrLivArea", "TotalBsmtSF", "FullBath",
        "GarageCars"];
    let mut train = Table::new(cols.iter().copied().chain(["SalePrice"]));
    let mut test = Table::new(cols);
    let (mut answers, mut oracle) = (Table::new(["Id", "SalePrice"]), Table::new(["Id", "SalePrice"]));
    let n_train = 1100;
    for i in 0..1460 {
        let qual = (5.5 + 1.6 * rng.normal()).round().clamp(1.0, 10.0);
        let year = (1970.0 + 25.0 * rng.normal() + 4.0 * (qual - 5.5)).round().clamp(1880.0, 2010.0);
        let area = (1500.0 * (0.3 * rng.normal() + 0.05 * (qual - 5.5)).exp()).round().clamp(400.0, 5000.0);
        let bsmt = (area * rng.range(0.3, 0.9)).round();
        let lot = (9000.0 * (0.4 * rng.normal()).exp()).round();
        let bath = (1.0 + area / 1500.0 + 0.3 * rng.normal()).round().clamp(0.0, 4.0);
        let garage = ((qual - 3.0) / 2.5 + 0.6 * rng.normal()).round().clamp(0.0, 4.0);
        let (h, premium) = *rng.pick(&hood);
        let clean = 1000.0
            * ((20.0 + 9.0 * qual + 1.2 * qual * qual) * (area / 1500.0).powf(0.8)
                + 0.25 * (year - 1900.0)
                + 8.0 * garage
                + 12.0 * (lot / 9000.0).ln().max(-1.0)
                + 0.01 * bsmt)
            + premium;
        let price = (clean * (0.08 * rng.normal()).exp()).round();
        let id = (i + 1).to_string();
        let feats = vec![id.clone(), num(lot, 0), h.into(), num(qual, 0), num(year, 0), num(area, 0), num(bsmt, 0),
            num(bath, 0), num(garage, 0)];
        if i >= n_train {
            answers.push([id.clone(), num(price, 0)]);
            oracle.push([id, num(clean.round(), 0)]);
        }
        split_push(i, n_train, &mut train, &mut test, feats, vec![num(price, 0)]);
    }
    let mut g = Generated::new(
        "# Housing Prices Competition for Kaggle Learn Users (miniature)\n\nPredict the sale price of each house.\n\n\
         ## Data\n- `train.csv`: `Id`, lot area (sq ft), neighborhood, overall quality (1–10), year built, above-ground \
         living area (sq ft), basement area, full bathrooms, garage capacity (cars), and `SalePrice`.\n- `test.csv`: the \
         same without `SalePrice`.\n\n## Evaluation\nMean absolute error between predicted and actual sale prices. \
         Write `submission.csv` with columns `Id,SalePrice`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("180000");
    g.starter(starter(
        LINEAR1,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"Id\"\nTARGETS = [\"SalePrice\"]\n\n\ndef feature(row):\n    return float(row[\"LotArea\"])\n\n\ndef postprocess(y):\n    return round(y)",
    ));
    g
}

/// spaceship-titanic: binary Transported, accuracy.
pub fn spaceship(rng: &mut Rng) -> Generated {
    let cols = ["PassengerId", "HomePlanet", "CryoSleep", "Cabin", "Destination", "Age", "VIP", "RoomService",
        "FoodCourt", "ShoppingMall", "Spa", "VRDeck"];
    let mut train = Table::new(cols.iter().copied().chain(["Transported"]));
    let mut test = Table::new(cols);
    let (mut answers, mut oracle) = (Table::new(["PassengerId", "Transported"]), Table::new(["PassengerId", "Transported"]));
    let n_train = 1600;
    let planets = [("Earth", 0.0), ("Europa", 0.7), ("Mars", 0.2)];
    let dests = [("TRAPPIST-1e", 0.0), ("55 Cancri e", 0.4), ("PSO J318.5-22", -0.1)];
    let decks = ["A", "B", "C", "D", "E", "F", "G"];
    let (mut group, mut member) = (0, 0);
    for i in 0..2200 {
        if member == 0 || rng.chance(0.7) {
            group += 1;
            member = 0;
        }
        member += 1;
        let (planet, pe) = *rng.pick(&planets);
        let (dest, de) = *rng.pick(&dests);
        let cryo = rng.chance(0.35);
        let age = (28.0 + 14.0 * rng.normal()).round().clamp(0.0, 79.0);
        let vip = rng.chance(0.03);
        let spend = |rng: &mut Rng, scale: f64| {
            if cryo || age < 13.0 || rng.chance(0.55) { 0.0 } else { (scale * (1.2 * rng.normal()).exp()).round() }
        };
        let (room, food, mall, spa, vr) = (spend(rng, 150.0), spend(rng, 250.0), spend(rng, 100.0), spend(rng, 200.0), spend(rng, 180.0));
        let deck = *rng.pick(&decks);
        let side = if rng.chance(0.5) { "P" } else { "S" };
        let logit = -0.4 + 2.2 * f64::from(cryo) + pe + de + if side == "S" { 0.45 } else { 0.0 }
            - 0.9 * ((room + spa + vr) / 300.0).min(3.0)
            + 0.5 * ((food + mall) / 300.0).min(3.0)
            + if age < 13.0 { 0.6 } else { 0.0 }
            + if deck == "B" || deck == "C" { 0.6 } else { 0.0 };
        let p = sigmoid(logit);
        let label = rng.chance(p);
        let tf = |b: bool| if b { "True" } else { "False" }.to_string();
        let id = format!("{group:04}_{member:02}");
        let feats = vec![id.clone(), planet.into(), tf(cryo), format!("{deck}/{}/{side}", rng.below(1800)), dest.into(),
            num(age, 0), tf(vip), num(room, 0), num(food, 0), num(mall, 0), num(spa, 0), num(vr, 0)];
        if i >= n_train {
            answers.push([id.clone(), tf(label)]);
            oracle.push([id, tf(p > 0.5)]);
        }
        split_push(i, n_train, &mut train, &mut test, feats, vec![tf(label)]);
    }
    let mut g = Generated::new(
        "# Spaceship Titanic (miniature)\n\nPredict which passengers were transported to an alternate dimension.\n\n\
         ## Data\n- `train.csv`: `PassengerId` (group_number), home planet, cryo sleep, cabin (deck/num/side), \
         destination, age, VIP, amounts spent at RoomService, FoodCourt, ShoppingMall, Spa, VRDeck, and \
         `Transported` (True/False).\n- `test.csv`: the same without the target.\n\n## Evaluation\nClassification \
         accuracy. Write `submission.csv` with columns `PassengerId,Transported`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("False");
    g.starter(starter(
        BINNED,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"PassengerId\"\nTARGETS = [\"Transported\"]\nOUTPUT = \"label\"  # label | classes | positive\nCLASSES = []\nPOSITIVE = \"True\"\nBINS = 8\n\n\ndef feature(row):\n    return float(row[\"Age\"])",
    ));
    g
}

/// nomad2018-predict-transparent-conductors: formation and bandgap energies, rmsle over 2 columns.
pub fn nomad(rng: &mut Rng) -> Generated {
    let cols = ["id", "spacegroup", "number_of_total_atoms", "percent_atom_al", "percent_atom_ga", "percent_atom_in",
        "lattice_vector_1_ang", "lattice_vector_2_ang", "lattice_vector_3_ang", "lattice_angle_alpha_degree",
        "lattice_angle_beta_degree", "lattice_angle_gamma_degree"];
    let targets = ["formation_energy_ev_natom", "bandgap_energy_ev"];
    let mut train = Table::new(cols.iter().copied().chain(targets));
    let mut test = Table::new(cols);
    let header: Vec<&str> = std::iter::once("id").chain(targets).collect();
    let (mut answers, mut oracle) = (Table::new(header.clone()), Table::new(header));
    let groups = [(12, 0.02), (33, 0.05), (167, -0.01), (194, 0.03), (206, 0.0), (227, 0.06)];
    let n_train = 1200;
    for i in 0..1600 {
        let (sg, sge) = *rng.pick(&groups);
        let atoms = *rng.pick(&[10.0, 20.0, 30.0, 40.0, 60.0, 80.0]);
        let (a, b, c) = (rng.uniform(), rng.uniform(), rng.uniform());
        let s = a + b + c;
        let (al, ga, inn) = ((a / s * 32.0).round() / 32.0, (b / s * 32.0).round() / 32.0, 0.0);
        let inn = (1.0 - al - ga).max(0.0) + inn;
        let v1 = 5.0 + 5.0 * inn + 3.0 * rng.uniform();
        let v2 = 5.0 + 4.0 * inn + 3.0 * rng.uniform();
        let v3 = 9.0 + 6.0 * rng.uniform() + 0.05 * atoms;
        let alpha = 90.0 + if sg == 12 { 15.0 * rng.uniform() } else { rng.normal() };
        let formation = (0.05 + 0.35 * al * ga * 4.0 + 0.15 * al - 0.05 * inn + sge + 0.002 * (alpha - 90.0)).max(0.0);
        let gap = (0.6 + 4.2 * al * al + 1.8 * ga - 0.9 * inn * (1.0 - al) + 0.01 * (v3 - 12.0)).max(0.05);
        let f_obs = (formation * (0.1 * rng.normal()).exp()).max(0.0);
        let g_obs = (gap * (0.05 * rng.normal()).exp()).max(0.0);
        let id = (i + 1).to_string();
        let feats = vec![id.clone(), sg.to_string(), num(atoms, 0), num(al, 4), num(ga, 4), num(inn, 4), num(v1, 4),
            num(v2, 4), num(v3, 4), num(alpha, 4), num(90.0 + rng.normal(), 4), num(90.0 + rng.normal(), 4)];
        if i >= n_train {
            answers.push([id.clone(), num(f_obs, 4), num(g_obs, 4)]);
            oracle.push([id, num(formation, 4), num(gap, 4)]);
        }
        split_push(i, n_train, &mut train, &mut test, feats, vec![num(f_obs, 4), num(g_obs, 4)]);
    }
    let mut g = Generated::new(
        "# Nomad2018 Predicting Transparent Conductors (miniature)\n\nPredict the formation energy (per atom) and the \
         bandgap energy of (Al, Ga, In) oxide materials.\n\n## Data\n- `train.csv`: `id`, spacegroup, number of atoms, \
         fractions of Al/Ga/In, lattice vectors and angles, and the two targets `formation_energy_ev_natom`, \
         `bandgap_energy_ev`.\n- `test.csv`: the same without targets.\n\n## Evaluation\nRoot mean squared \
         logarithmic error of each target column, averaged over the two columns. Write `submission.csv` with columns \
         `id,formation_energy_ev_natom,bandgap_energy_ev`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0.1");
    g.starter(starter(
        LINEAR1,
        &format!(
            "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"id\"\nTARGETS = {}\n\n\ndef feature(row):\n    return float(row[\"lattice_vector_1_ang\"])\n\n\ndef postprocess(y):\n    return round(max(y, 0.0), 5)",
            py_list(&targets)
        ),
    ));
    g
}

/// tabular-playground-series-dec-2021: forest cover type (7 classes), accuracy.
pub fn tps_dec2021(rng: &mut Rng) -> Generated {
    let mut cols: Vec<String> = ["Id", "Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology",
        "Vertical_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways", "Hillshade_9am", "Hillshade_Noon",
        "Hillshade_3pm", "Horizontal_Distance_To_Fire_Points"]
        .map(String::from)
        .to_vec();
    cols.extend((1..=4).map(|i| format!("Wilderness_Area{i}")));
    cols.extend((1..=10).map(|i| format!("Soil_Type{i}")));
    let mut train = Table::new(cols.iter().cloned().chain(["Cover_Type".to_string()]));
    let mut test = Table::new(cols.clone());
    let (mut answers, mut oracle) = (Table::new(["Id", "Cover_Type"]), Table::new(["Id", "Cover_Type"]));
    let n_train = 1800;
    for i in 0..2400 {
        let elev = 2000.0 + 1700.0 * rng.uniform();
        let wild = rng.weighted(&[0.45, 0.05, 0.4, 0.1]);
        let soil = rng.below(10);
        let aspect = 360.0 * rng.uniform();
        let slope = (15.0 + 8.0 * rng.normal()).clamp(0.0, 60.0);
        let hyd = (250.0 * (0.8 * rng.normal()).exp()).round();
        let road = (2000.0 * rng.uniform() * 3.0).round();
        // Class scores: elevation bands, wilderness and soil preferences.
        let centers = [3250.0, 2950.0, 2400.0, 2150.0, 2700.0, 2450.0, 3500.0];
        let mut scores: Vec<f64> = centers.iter().map(|c| -((elev - c) / 180.0).powi(2)).collect();
        scores[wild + 1] += 0.8;
        scores[soil % 7] += 0.6;
        scores[1] += if road > 3000.0 { 0.5 } else { 0.0 };
        let top = scores.iter().cloned().fold(f64::MIN, f64::max);
        let probs: Vec<f64> = scores.iter().map(|s| ((s - top) * 1.5).exp()).collect();
        let y = rng.weighted(&probs);
        let best = (0..7).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).expect("7 classes");
        let hill = |base: f64, rng: &mut Rng| (base + 25.0 * rng.normal()).round().clamp(0.0, 255.0);
        let id = i.to_string();
        let mut feats = vec![id.clone(), num(elev.round(), 0), num(aspect.round(), 0), num(slope.round(), 0), num(hyd, 0),
            num((hyd * 0.2 * rng.normal()).round(), 0), num(road, 0), num(hill(212.0, rng), 0), num(hill(221.0, rng), 0),
            num(hill(140.0, rng), 0), num((1800.0 * rng.uniform() * 3.0).round(), 0)];
        feats.extend((0..4).map(|w| if w == wild { "1" } else { "0" }.to_string()));
        feats.extend((0..10).map(|s| if s == soil { "1" } else { "0" }.to_string()));
        if i >= n_train {
            answers.push([id.clone(), (y + 1).to_string()]);
            oracle.push([id, (best + 1).to_string()]);
        }
        split_push(i, n_train, &mut train, &mut test, feats, vec![(y + 1).to_string()]);
    }
    let mut g = Generated::new(
        "# Tabular Playground Series - Dec 2021 (miniature)\n\nPredict the forest cover type (1–7) from cartographic \
         variables.\n\n## Data\n- `train.csv`: `Id`, elevation, aspect, slope, distances to hydrology, roadways and \
         fire points, hillshade at 9am/noon/3pm, one-hot `Wilderness_Area1..4` and `Soil_Type1..10`, and \
         `Cover_Type`.\n- `test.csv`: the same without `Cover_Type`.\n\n## Evaluation\nClassification accuracy. Write \
         `submission.csv` with columns `Id,Cover_Type`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("2");
    g.starter(starter(
        BINNED,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"Id\"\nTARGETS = [\"Cover_Type\"]\nOUTPUT = \"label\"  # label | classes | positive\nCLASSES = []\nPOSITIVE = \"\"\nBINS = 10\n\n\ndef feature(row):\n    return float(row[\"Slope\"])",
    ));
    g
}
