"""Word lists for generated data: branch towns and (fictitious) customer names."""

from __future__ import annotations

TOWNS = """
Aberdeen|Abingdon|Accrington|Aldershot|Alnwick|Altrincham|Andover|Ashford|Aylesbury|Ayr|Banbury|Bangor|Barnsley|Barnstaple|Basildon|
Basingstoke|Bath|Bedford|Belfast|Berwick-upon-Tweed|Beverley|Bexhill-on-Sea|Bicester|Birkenhead|Birmingham|Blackburn|Blackpool|
Bognor Regis|Bolton|Bootle|Boston|Bournemouth|Bracknell|Bradford|Braintree|Bridgend|Bridgwater|Bridlington|Brighton|Bristol|
Bromsgrove|Burnley|Burton upon Trent|Bury|Bury St Edmunds|Buxton|Cambridge|Canterbury|Cardiff|Carlisle|Chatham|Chelmsford|
Cheltenham|Chester|Chesterfield|Chichester|Chippenham|Chorley|Cirencester|Clacton-on-Sea|Colchester|Colwyn Bay|Corby|Coventry|
Crawley|Crewe|Darlington|Dartford|Derby|Dewsbury|Doncaster|Dorchester|Dover|Dudley|Dumfries|Dundee|Dunfermline|Durham|
Eastbourne|Edinburgh|Ellesmere Port|Ely|Epsom|Exeter|Falkirk|Falmouth|Fareham|Farnborough|Felixstowe|Folkestone|Frome|
Gateshead|Gillingham|Glasgow|Gloucester|Gosport|Grantham|Gravesend|Great Yarmouth|Grimsby|Guildford|Halifax|Harlow|Harrogate|
Hartlepool|Hastings|Hatfield|Haywards Heath|Hemel Hempstead|Hereford|Hertford|High Wycombe|Hinckley|Hitchin|Horsham|
Huddersfield|Hull|Huntingdon|Ilford|Inverness|Ipswich|Isle of Wight|Kendal|Kettering|Kidderminster|Kilmarnock|King's Lynn|
Kingston upon Thames|Kirkcaldy|Lancaster|Leamington Spa|Leeds|Leicester|Lewes|Lichfield|Lincoln|Liverpool|Livingston|Llandudno|
London Brixton|London Camden|London Clapham|London Greenwich|London Hackney|London Islington|London Shoreditch|London Soho|
Loughborough|Lowestoft|Ludlow|Luton|Macclesfield|Maidenhead|Maidstone|Malvern|Manchester|Mansfield|Margate|Marlow|Matlock|
Middlesbrough|Milton Keynes|Morecambe|Motherwell|Newark-on-Trent|Newbury|Newcastle upon Tyne|Newport|Newquay|Northampton|
Northwich|Norwich|Nottingham|Nuneaton|Oldham|Ormskirk|Oxford|Paignton|Paisley|Penrith|Penzance|Perth|Peterborough|Plymouth|
Poole|Portsmouth|Preston|Reading|Redditch|Reigate|Ripon|Rochdale|Romford|Rotherham|Rugby|Runcorn|Salford|Salisbury|
Scarborough|Scunthorpe|Sevenoaks|Sheffield|Shrewsbury|Skegness|Skipton|Slough|Solihull|Southampton|Southend-on-Sea|Southport|
St Albans|St Andrews|St Helens|St Ives|Stafford|Stamford|Stevenage|Stirling|Stockport|Stockton-on-Tees|Stoke-on-Trent|
Stratford-upon-Avon|Stroud|Sunderland|Sutton Coldfield|Swansea|Swindon|Tamworth|Taunton|Telford|Tewkesbury|Thetford|
Torquay|Truro|Tunbridge Wells|Uppingham|Wakefield|Walsall|Warrington|Warwick|Watford|Wellingborough|Wells|Welwyn Garden City|
Weston-super-Mare|Weymouth|Whitby|Whitstable|Wigan|Winchester|Windsor|Woking|Wolverhampton|Worcester|Worthing|Wrexham|Yeovil|York
"""

FIRST_NAMES = """
Aaron Abigail Adam Adrian Aisha Alan Albert Alex Alfred Alice Alison Amanda Amber Amelia Amir Amy Andrea Andrew Angela Anita Ann
Anna Anthony Archie Arthur Ashley Barbara Basil Beatrice Ben Benjamin Bernard Beth Bethany Betty Bill Bob Bradley Brenda Brian
Bruce Callum Cameron Carl Carol Caroline Catherine Charles Charlie Charlotte Chloe Chris Christine Claire Clara Colin Connor
Craig Daisy Daniel Danny David Dean Deborah Declan Denise Dennis Diana Donna Dorothy Douglas Dylan Eddie Edith Edward Eleanor
Elijah Elizabeth Ella Ellen Ellie Emily Emma Eric Ethan Eva Evelyn Faith Fatima Felix Fiona Florence Frances Francis Frank
Freddie Gail Gareth Gary Gavin Gemma George Georgia Gerald Gillian Glen Gordon Grace Graham Hannah Harold Harriet Harry Harvey
Hazel Heather Helen Henry Holly Howard Hugh Ian Imogen Isaac Isabel Isla Ivy Jack Jacob Jade James Jamie Jane Janet Jason
Jasmine Jean Jeffrey Jennifer Jenny Jeremy Jessica Jill Joan Joanne Joe John Jonathan Joseph Joshua Joyce Judith Julia Julie
Justin Karen Kate Katherine Kathleen Kathryn Keith Kelly Kenneth Kevin Kieran Kim Kyle Laura Lauren Leah Leo Leon Lewis Liam
Lily Linda Lisa Logan Louise Lucas Lucy Luke Lydia Maisie Malcolm Margaret Maria Marie Mark Martin Mary Matilda Matthew Maureen
Max Megan Melissa Michael Michelle Mohammed Molly Nancy Naomi Natalie Nathan Neil Nicholas Nicola Noah Norman Oliver Olivia
Oscar Owen Pamela Patricia Patrick Paul Pauline Peter Philip Phoebe Priya Rachel Ravi Rebecca Richard Robert Robin Roger Ronald
Rose Ross Roy Ruby Russell Ruth Ryan Sally Samantha Samuel Sandra Sarah Scarlett Scott Sean Sharon Shaun Sheila Simon Sophia
Sophie Stanley Stephen Steven Stuart Susan Sylvia Teresa Terry Thomas Tim Toby Tom Tracey Trevor Valerie Vera Victoria Vincent
Walter Wendy William Yasmin Yusuf Zara Zoe
"""

LAST_NAMES = """
Abbott Adams Ahmed Ali Allen Anderson Armstrong Atkinson Bailey Baker Ball Banks Barker Barnes Barrett Bates Baxter Bell Bennett
Berry Bird Bishop Black Blake Bond Booth Bowen Boyd Bradley Brennan Briggs Brooks Brown Bryant Bull Burns Burton Butler Byrne
Cameron Campbell Carr Carter Chambers Chapman Clark Clarke Cole Coleman Collins Cook Cooper Cox Craig Cross Cunningham Curtis
Dale Daniels Davey Davidson Davies Dawson Day Dean Dixon Doyle Duncan Dunn Edwards Elliott Ellis Evans Farrell Ferguson Fisher
Fleming Fletcher Ford Foster Fox Francis Fraser Freeman Fuller Gardner Gibbs Gibson Gill Gordon Graham Grant Gray Green
Gregory Griffin Griffiths Hall Hamilton Harris Harrison Hart Harvey Hawkins Hayes Henderson Hill Hobbs Holland Holmes Hooper
Hopkins Houghton Howard Howe Hudson Hughes Hunt Hunter Hussain Jackson James Jenkins Johnson Johnston Jones Jordan Kaur Kelly
Kennedy Khan King Knight Lamb Lambert Lane Lawrence Lawson Lee Lewis Lloyd Long Lowe Lucas Marsh Marshall Martin Mason
Matthews May McDonald Miller Mills Mitchell Moore Morgan Morris Morrison Murphy Murray Nash Newman Nicholson Norman Norris
O'Brien O'Connor Oliver Osborne Owen Palmer Parker Parry Patel Payne Pearce Pearson Perry Phillips Pike Poole Porter Potter
Powell Price Pritchard Quinn Read Reed Reid Reynolds Rhodes Richards Richardson Riley Roberts Robertson Robinson Rogers Rose
Ross Russell Ryan Saunders Scott Sharp Shaw Simpson Singh Slater Smith Spencer Stevens Stewart Stone Sutton Taylor Thomas
Thompson Thomson Todd Townsend Tucker Turner Wade Walker Wallace Walsh Ward Warren Watson Watts Webb Welch Wells West Wheeler
White Whitehead Wilkinson Williams Willis Wilson Wood Woods Wright Young
"""


_FIRST = tuple(FIRST_NAMES.split())
_LAST = tuple(LAST_NAMES.split())


def town_names() -> list[str]:
    return [t.strip() for t in TOWNS.replace("\n", "").split("|") if t.strip()]


def first_names() -> tuple[str, ...]:
    return _FIRST


def last_names() -> tuple[str, ...]:
    return _LAST
