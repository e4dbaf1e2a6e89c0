//! Who the synthetic patients are: names from many languages (accents, particles,
//! apostrophes, hyphens), an address in one of a few countries with that country's
//! formats, E.164 phone numbers in ranges kept for fiction where a country has one, and
//! e-mail addresses at the domains reserved for examples (RFC 2606).
//!
//! Only what Salus keeps of a Patient is written (see `crate::patient`): identifier,
//! `active`, names (family and given), telecom (phones, one e-mail), gender, birthDate and
//! one address. A generated patient therefore round-trips through the FHIR API unchanged.

use super::rng::Rng;
use chrono::NaiveDate;

const GIVEN_FEMALE: &[&str] = &[
    "Ada",
    "Grace",
    "Zoë",
    "Chloé",
    "Inès",
    "Amélie",
    "Léa",
    "Åsa",
    "Sigrún",
    "Ana",
    "María",
    "Lucía",
    "Begoña",
    "Itziar",
    "Zofia",
    "Małgorzata",
    "Agnieszka",
    "Ngozi",
    "Chidinma",
    "Aisha",
    "Fatima",
    "Mei",
    "Yuki",
    "Hana",
    "Priya",
    "Ananya",
    "Siobhán",
    "Aoife",
    "Niamh",
    "Renée",
    "Mónica",
    "Emily",
    "Olivia",
    "Sophie",
    "Charlotte",
    "Amara",
    "Thảo",
    "Linh",
    "Elif",
    "Şule",
    "Zeynep",
    "Émilie",
    "Margarete",
    "Jördis",
    "Ingrid",
    "Dörthe",
    "Noémie",
    "Joana",
    "Conceição",
    "Eleni",
];

const GIVEN_MALE: &[&str] = &[
    "Alan",
    "José",
    "Jesús",
    "Ángel",
    "Raúl",
    "Joaquín",
    "François",
    "Jérôme",
    "Loïc",
    "Gaël",
    "Björn",
    "Søren",
    "Jörg",
    "Jürgen",
    "Ömer",
    "Mehmet",
    "Çağrı",
    "Łukasz",
    "Wojciech",
    "Chidi",
    "Emeka",
    "Kwame",
    "Wei",
    "Hiroshi",
    "Kenji",
    "Arjun",
    "Rohan",
    "Seán",
    "Ciarán",
    "Oisín",
    "Tomás",
    "João",
    "Luís",
    "Nikolaj",
    "Mikael",
    "Ahmed",
    "Omar",
    "Youssef",
    "Dũng",
    "Minh",
    "James",
    "Oliver",
    "Jack",
    "George",
    "Noah",
    "Stéphane",
    "Håkon",
    "Dmitri",
    "Andrés",
    "Nikos",
];

const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Müller",
    "Schäfer",
    "Groß",
    "Köhler",
    "García",
    "Fernández",
    "Martínez",
    "López",
    "Núñez",
    "Peña",
    "Ibáñez",
    "Dubois",
    "Lefèvre",
    "Béranger",
    "Moreau",
    "Rossi",
    "Bianchi",
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Kowalski",
    "Wiśniewski",
    "Łukasiewicz",
    "Żak",
    "Nowak",
    "Dvořák",
    "Horváth",
    "Szabó",
    "Yılmaz",
    "Öztürk",
    "Çelik",
    "Şahin",
    "Okafor",
    "Adeyemi",
    "Mensah",
    "O'Brien",
    "O'Connor",
    "MacDonald",
    "van der Berg",
    "de Vries",
    "Jansen",
    "Johansson",
    "Sørensen",
    "Østergaard",
    "Guðmundsdóttir",
    "Jónsson",
    "Wang",
    "Zhang",
    "Tanaka",
    "Satō",
    "Suzuki",
    "Kim",
    "Park",
    "Patel",
    "Sharma",
    "Khan",
    "Haddad",
    "Papadopoulos",
    "Costa",
    "Silva",
    "Gonçalves",
    "Hernández",
    "D'Angelo",
    "de la Cruz",
    "Ní Bhriain",
];

/// A country the population lives in: ISO 3166 code, cities with their region and a
/// postal-code pattern (`#` a digit, `@` a letter), streets, and how phones are made.
struct Country {
    code: &'static str,
    cities: &'static [(&'static str, Option<&'static str>, &'static str)],
    streets: &'static [&'static str],
    /// Whether the house number comes after the street name.
    number_last: bool,
    /// E.164 prefix (country code and area) and how many random digits follow.
    phone: (&'static str, u32),
}

const COUNTRIES: &[(u32, Country)] = &[
    (
        40,
        Country {
            code: "US",
            cities: &[
                ("Boston", Some("MA"), "021##"),
                ("Springfield", Some("IL"), "627##"),
                ("Portland", Some("OR"), "972##"),
                ("Austin", Some("TX"), "787##"),
                ("Albuquerque", Some("NM"), "871##"),
            ],
            streets: &[
                "Maple Street",
                "Oak Avenue",
                "Washington Boulevard",
                "Cedar Lane",
                "Elm Court",
            ],
            number_last: false,
            // 555-0100 to 555-0199 are the numbers the NANP keeps for fiction.
            phone: ("+1617555010", 1),
        },
    ),
    (
        20,
        Country {
            code: "GB",
            cities: &[
                ("London", None, "SW# #@@"),
                ("Manchester", None, "M## #@@"),
                ("Leeds", None, "LS# #@@"),
                ("Bristol", None, "BS# #@@"),
            ],
            streets: &[
                "Station Road",
                "High Street",
                "Church Lane",
                "Victoria Road",
            ],
            number_last: false,
            // 020 7946 0000 to 0999: Ofcom's numbers for drama.
            phone: ("+442079460", 3),
        },
    ),
    (
        15,
        Country {
            code: "DE",
            cities: &[
                ("Berlin", Some("Berlin"), "10###"),
                ("München", Some("Bayern"), "80###"),
                ("Köln", Some("Nordrhein-Westfalen"), "50###"),
            ],
            streets: &[
                "Hauptstraße",
                "Schillerstraße",
                "Gartenweg",
                "Bahnhofstraße",
            ],
            number_last: true,
            phone: ("+4930", 8),
        },
    ),
    (
        15,
        Country {
            code: "FR",
            cities: &[
                ("Paris", None, "750##"),
                ("Lyon", None, "690##"),
                ("Marseille", None, "130##"),
            ],
            streets: &[
                "rue de la Paix",
                "avenue Victor-Hugo",
                "boulevard Saint-Michel",
                "rue des Écoles",
            ],
            number_last: false,
            phone: ("+331", 8),
        },
    ),
    (
        10,
        Country {
            code: "ES",
            cities: &[
                ("Madrid", Some("Madrid"), "280##"),
                ("Sevilla", Some("Andalucía"), "410##"),
                ("A Coruña", Some("Galicia"), "150##"),
            ],
            streets: &[
                "Calle Mayor",
                "Calle de Alcalá",
                "Avenida de la Constitución",
            ],
            number_last: true,
            phone: ("+3491", 7),
        },
    ),
];

/// A synthetic person.
pub(crate) struct Person {
    pub family: String,
    pub given: Vec<String>,
    pub gender: &'static str,
    pub birth_date: NaiveDate,
    pub address: Address,
    pub phones: Vec<String>,
    pub email: Option<String>,
}

pub(crate) struct Address {
    pub line: String,
    pub city: &'static str,
    pub state: Option<&'static str>,
    pub postal_code: String,
    pub country: &'static str,
}

fn digits(rng: &mut Rng, n: u32) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

fn fill(rng: &mut Rng, pattern: &str) -> String {
    pattern
        .chars()
        .map(|c| match c {
            '#' => char::from(b'0' + rng.below(10) as u8),
            // The letters of a UK postcode's inward code (no C, I, K, M, O or V).
            '@' => char::from(*rng.pick(b"ABDEFGHJLNPQRSTUWXYZ")),
            other => other,
        })
        .collect()
}

/// `name` in the ASCII letters an e-mail address's local part is commonly made of.
fn ascii_local(name: &str) -> String {
    let mut out = String::new();
    for c in salus_kernel::text::fold(name).chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'ø' => out.push('o'),
            'ł' => out.push('l'),
            'đ' | 'ð' => out.push('d'),
            'ı' => out.push('i'),
            'þ' => out.push_str("th"),
            _ => {}
        }
    }
    out
}

/// A person born between 0 and 95 years before `as_of`.
pub(crate) fn person(rng: &mut Rng, as_of: NaiveDate) -> Person {
    let gender = *rng.weighted(&[
        (490, "female"),
        (490, "male"),
        (12, "other"),
        (8, "unknown"),
    ]);
    let pool = match gender {
        "female" => GIVEN_FEMALE,
        "male" => GIVEN_MALE,
        _ => {
            if rng.chance(500) {
                GIVEN_FEMALE
            } else {
                GIVEN_MALE
            }
        }
    };
    let mut given = vec![rng.pick(pool).to_string()];
    if rng.chance(350) {
        let second = rng.pick(pool).to_string();
        if second != given[0] {
            given.push(second);
        }
    }
    let mut family = rng.pick(FAMILY).to_string();
    if rng.chance(60) {
        let other = rng.pick(FAMILY);
        if *other != family {
            family = format!("{family}-{other}");
        }
    }
    // Ages: children and adults alike, fewer of the very old.
    let age_days = *rng.weighted(&[
        (22, (0, 17)),
        (40, (18, 49)),
        (28, (50, 74)),
        (10, (75, 95)),
    ]);
    let days = rng.between(age_days.0 * 365, age_days.1 * 365 + 364);
    let birth_date = as_of - chrono::Duration::days(days.max(1));
    let country = rng.weighted(COUNTRIES);
    let (city, state, postal) = *rng.pick(country.cities);
    let street = rng.pick(country.streets);
    let number = rng.between(1, 240);
    let line = if country.number_last {
        format!("{street} {number}")
    } else {
        format!("{number} {street}")
    };
    let mut phones = vec![format!(
        "{}{}",
        country.phone.0,
        digits(rng, country.phone.1)
    )];
    if rng.chance(250) {
        phones.push(format!(
            "{}{}",
            country.phone.0,
            digits(rng, country.phone.1)
        ));
        if phones[1] == phones[0] {
            phones.pop();
        }
    }
    let email = (days >= 16 * 365 && rng.chance(750)).then(|| {
        let domain = rng.pick(&["example.org", "example.com", "example.net"]);
        format!(
            "{}.{}{}@{domain}",
            ascii_local(&given[0]),
            ascii_local(&family),
            rng.between(1, 99)
        )
    });
    Person {
        family,
        given,
        gender,
        birth_date,
        address: Address {
            line,
            city,
            state,
            postal_code: fill(rng, postal),
            country: country.code,
        },
        phones,
        email,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mail_local_parts_are_plain_ascii() {
        assert_eq!(ascii_local("Łukasiewicz"), "lukasiewicz");
        assert_eq!(ascii_local("Groß"), "gross");
        assert_eq!(ascii_local("Nguyễn"), "nguyen");
        assert_eq!(ascii_local("O'Brien"), "obrien");
        assert_eq!(ascii_local("van der Berg"), "vanderberg");
        assert_eq!(ascii_local("Østergaard"), "ostergaard");
    }
}
