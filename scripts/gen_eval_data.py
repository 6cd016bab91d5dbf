"""Writes coral_graph/eval/data/facts.jsonl and choice.jsonl (run once; the output is committed)."""

import json
import random

capitals = """France:Paris;Germany:Berlin;Italy:Rome;Spain:Madrid;Portugal:Lisbon;England:London;
Ireland:Dublin;Scotland:Edinburgh;Belgium:Brussels;Netherlands:Amsterdam;Austria:Vienna;Switzerland:Bern;
Poland:Warsaw;Czech Republic:Prague;Hungary:Budapest;Greece:Athens;Sweden:Stockholm;Norway:Oslo;
Denmark:Copenhagen;Finland:Helsinki;Iceland:Reykjavik;Russia:Moscow;Ukraine:Kyiv;Romania:Bucharest;
Bulgaria:Sofia;Serbia:Belgrade;Croatia:Zagreb;Turkey:Ankara;Egypt:Cairo;Kenya:Nairobi;Nigeria:Abuja;
Ghana:Accra;Ethiopia:Addis Ababa;Morocco:Rabat;South Africa:Pretoria;Japan:Tokyo;China:Beijing;
South Korea:Seoul;North Korea:Pyongyang;India:New Delhi;Pakistan:Islamabad;Bangladesh:Dhaka;
Thailand:Bangkok;Vietnam:Hanoi;Indonesia:Jakarta;Philippines:Manila;Malaysia:Kuala Lumpur;
Singapore:Singapore;Iran:Tehran;Iraq:Baghdad;Saudi Arabia:Riyadh;Israel:Jerusalem;Syria:Damascus;
Lebanon:Beirut;Jordan:Amman;Afghanistan:Kabul;Nepal:Kathmandu;Mongolia:Ulaanbaatar;Australia:Canberra;
New Zealand:Wellington;Canada:Ottawa;United States:Washington;Mexico:Mexico City;Cuba:Havana;
Jamaica:Kingston;Brazil:Brasilia;Argentina:Buenos Aires;Chile:Santiago;Peru:Lima;Colombia:Bogota;
Venezuela:Caracas;Ecuador:Quito;Uruguay:Montevideo;Paraguay:Asuncion;Bolivia:La Paz;
Cambodia:Phnom Penh;Laos:Vientiane;Sri Lanka:Colombo;Qatar:Doha;Kuwait:Kuwait City;Libya:Tripoli;
Tunisia:Tunis;Algeria:Algiers;Sudan:Khartoum;Senegal:Dakar;Uganda:Kampala;Tanzania:Dodoma;Zimbabwe:Harare;
Zambia:Lusaka;Angola:Luanda;Estonia:Tallinn;Latvia:Riga;Lithuania:Vilnius;Slovakia:Bratislava;
Slovenia:Ljubljana;Albania:Tirana;Cyprus:Nicosia;Malta:Valletta;Luxembourg:Luxembourg;Monaco:Monaco;Wales:Cardiff"""
symbols = """gold:Au;silver:Ag;iron:Fe;copper:Cu;oxygen:O;hydrogen:H;carbon:C;nitrogen:N;helium:He;
sodium:Na;potassium:K;calcium:Ca;lead:Pb;tin:Sn;zinc:Zn;mercury:Hg;sulfur:S;neon:Ne;chlorine:Cl;
uranium:U;magnesium:Mg;aluminium:Al;silicon:Si;phosphorus:P;argon:Ar"""
misc = [
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many legs does an insect have?", ["6", "six"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("How many hours are in a day?", ["24"]),
    ("How many minutes are in an hour?", ["60"]),
    ("How many seconds are in a minute?", ["60"]),
    ("How many days are in a leap year?", ["366"]),
    ("How many continents are there?", ["7", "seven"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("How many sides does a square have?", ["4", "four"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("How many sides does an octagon have?", ["8", "eight"]),
    ("How many players are on a soccer team on the field?", ["11", "eleven"]),
    ("How many planets are in the solar system?", ["8", "eight"]),
    ("What is the largest planet in the solar system?", ["Jupiter"]),
    ("Which planet is known as the red planet?", ["Mars"]),
    ("Which planet is closest to the sun?", ["Mercury"]),
    ("What is the closest star to the Earth?", ["the Sun", "Sun"]),
    ("What is the natural satellite of the Earth called?", ["the Moon", "Moon"]),
    ("What is the largest ocean on Earth?", ["the Pacific Ocean", "Pacific"]),
    ("What is the longest river in the world?", ["the Nile", "Nile", "Amazon"]),
    ("What is the tallest mountain in the world?", ["Mount Everest", "Everest"]),
    ("What is the largest animal on Earth?", ["the blue whale", "blue whale"]),
    ("What is the fastest land animal?", ["the cheetah", "cheetah"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color is grass?", ["green"]),
    ("What color are bananas when they are ripe?", ["yellow"]),
    ("What color do you get by mixing blue and yellow?", ["green"]),
    ("What color do you get by mixing red and white?", ["pink"]),
    ("What is the freezing point of water in degrees Celsius?", ["0", "zero"]),
    ("What is the boiling point of water in degrees Celsius?", ["100"]),
    ("What gas do plants take in from the air?", ["carbon dioxide", "CO2"]),
    ("What gas do humans need to breathe?", ["oxygen"]),
    ("What is frozen water called?", ["ice"]),
    ("What do bees make?", ["honey"]),
    ("What do cows drink?", ["water"]),
    ("What animal is known as the king of the jungle?", ["the lion", "lion"]),
    ("What is the baby of a dog called?", ["a puppy", "puppy"]),
    ("What is the baby of a cat called?", ["a kitten", "kitten"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What is the opposite of big?", ["small", "little"]),
    ("What is the opposite of fast?", ["slow"]),
    ("What is the opposite of happy?", ["sad", "unhappy"]),
    ("What is the opposite of left?", ["right"]),
    ("What is the opposite of black?", ["white"]),
    ("What is the opposite of open?", ["closed", "shut"]),
    ("What is the plural of mouse?", ["mice"]),
    ("What is the plural of child?", ["children"]),
    ("What is the plural of foot?", ["feet"]),
    ("What is the plural of tooth?", ["teeth"]),
    ("What is the plural of man?", ["men"]),
    ("What is the first letter of the English alphabet?", ["A"]),
    ("What is the last letter of the English alphabet?", ["Z"]),
    ("Who wrote Romeo and Juliet?", ["William Shakespeare", "Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo da Vinci", "da Vinci", "Leonardo"]),
    ("Who was the first person to walk on the Moon?", ["Neil Armstrong", "Armstrong"]),
    ("What language is spoken in Brazil?", ["Portuguese"]),
    ("What language is spoken in Mexico?", ["Spanish"]),
    ("What language is spoken in France?", ["French"]),
    ("What language is spoken in Germany?", ["German"]),
    ("What language is spoken in Japan?", ["Japanese"]),
    ("What is the currency of Japan?", ["the yen", "yen"]),
    ("What is the currency of the United Kingdom?", ["the pound", "pound", "pound sterling"]),
    ("What is the currency of the United States?", ["the dollar", "dollar", "US dollar"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
    ("In which city is the Eiffel Tower?", ["Paris"]),
    ("In which city is the Colosseum?", ["Rome"]),
    ("In which country is the Great Wall?", ["China"]),
    ("What is the largest country in the world by area?", ["Russia"]),
    ("What is the hardest natural substance?", ["diamond"]),
    ("What is the chemical formula of water?", ["H2O"]),
    ("What organ pumps blood through the body?", ["the heart", "heart"]),
    ("How many bones does an adult human have?", ["206"]),
    ("What is the main language of Australia?", ["English"]),
    ("What is the square root of 81?", ["9", "nine"]),
    ("What is 10 times 10?", ["100"]),
]
rows = []
for i, pair in enumerate(x for x in capitals.replace("\n", "").split(";") if x):
    c, cap = pair.split(":")
    rows.append(
        {
            "id": f"capital-{i + 1:03d}",
            "question": f"What is the capital of {c}?",
            "answers": [cap],
            "scorer": "exact",
            "topic": "capital",
        }
    )
for i, pair in enumerate(x for x in symbols.replace("\n", "").split(";") if x):
    el, sym = pair.split(":")
    rows.append(
        {
            "id": f"symbol-{i + 1:03d}",
            "question": f"What is the chemical symbol of {el}?",
            "answers": [sym],
            "scorer": "exact",
            "topic": "chemistry",
        }
    )
for i, (q, a) in enumerate(misc):
    rows.append(
        {
            "id": f"fact-{i + 1:03d}",
            "question": q,
            "answers": a,
            "scorer": "exact",
            "topic": "general",
        }
    )
random.Random(15).shuffle(rows)
with open("coral_graph/eval/data/facts.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
# Multiple choice from the same facts: 4 options, distractors of the same topic.
rng = random.Random(15)
by_topic = {}
for r in rows:
    by_topic.setdefault(r["topic"], []).append(r["answers"][0])
out = []
for r in rows:
    right = r["answers"][0]
    pool = [a for a in by_topic[r["topic"]] if a.lower() != right.lower() and a not in r["answers"]]
    if r["topic"] == "general":
        continue
    options = [*rng.sample(pool, 3), right]
    rng.shuffle(options)
    letter = "ABCD"[options.index(right)]
    out.append(
        {
            "id": r["id"].replace("capital", "mc-capital").replace("symbol", "mc-symbol"),
            "question": r["question"],
            "choices": options,
            "answers": [letter],
            "scorer": "option",
        }
    )
with open("coral_graph/eval/data/choice.jsonl", "w") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(rows), len(out))
